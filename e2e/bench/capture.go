// Package bench holds the measuring instruments of `make bench`
// (e2e/cmd/bench): a BGP packet capture that timestamps each message as it
// arrives in a namespace, and a kernel route watcher that timestamps each
// route as it appears.
package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Capture records the TCP packets that arrive on (and leave) one interface
// of a namespace, with the kernel's receive timestamps, through an
// AF_PACKET socket opened inside that namespace. Nothing is changed in the
// namespace.
type Capture struct {
	fd   int
	mu   sync.Mutex
	pkts []packet
	err  error
	stop chan struct{}
	done chan struct{}
}

type packet struct {
	ts       time.Time
	outgoing bool
	src, dst netip.AddrPort
	seq      uint32
	flags    uint8
	payload  []byte
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// inNS runs f on a locked OS thread switched into namespace ns. The thread
// goes back to the original namespace afterwards, or dies with its
// goroutine if it cannot.
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("opening namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// StartCapture starts capturing on ifName in namespace ns.
func StartCapture(ns, ifName string) (*Capture, error) {
	c := &Capture{fd: -1, stop: make(chan struct{}), done: make(chan struct{})}
	err := inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("opening a packet socket: %w", err)
		}
		c.fd = fd
		ifi, err := interfaceIndex(ifName)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
			return fmt.Errorf("binding the packet socket to %s: %w", ifName, err)
		}
		return nil
	})
	if err == nil {
		err = errors.Join(
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20),
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1),
			unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}))
	}
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, err
	}
	go c.read()
	return c, nil
}

func interfaceIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("finding interface %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

func (c *Capture) read() {
	defer close(c.done)
	defer unix.Close(c.fd)
	buf := make([]byte, 256<<10)
	oob := make([]byte, 256)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		ts := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					t := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					ts = time.Unix(t.Sec, t.Nsec)
				}
			}
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		p, ok := parseTCP(buf[:n])
		if !ok {
			continue
		}
		p.ts = ts
		p.outgoing = ll != nil && ll.Pkttype == unix.PACKET_OUTGOING
		c.mu.Lock()
		c.pkts = append(c.pkts, p)
		c.mu.Unlock()
	}
}

// parseTCP reads an Ethernet frame holding IPv4 and TCP.
func parseTCP(b []byte) (packet, bool) {
	var p packet
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_IP {
		return p, false
	}
	ipb := b[14:]
	ihl := int(ipb[0]&0x0f) * 4
	if ipb[0]>>4 != 4 || ipb[9] != unix.IPPROTO_TCP || ihl < 20 || len(ipb) < ihl+20 {
		return p, false
	}
	total := int(binary.BigEndian.Uint16(ipb[2:4]))
	if total == 0 || total > len(ipb) { // a GSO packet may say 0
		total = len(ipb)
	}
	tcp := ipb[ihl:total]
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || len(tcp) < doff {
		return p, false
	}
	src, _ := netip.AddrFromSlice(ipb[12:16])
	dst, _ := netip.AddrFromSlice(ipb[16:20])
	p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2]))
	p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4]))
	p.seq = binary.BigEndian.Uint32(tcp[4:8])
	p.flags = tcp[13]
	p.payload = append([]byte(nil), tcp[doff:]...)
	return p, true
}

// Stop ends the capture.
func (c *Capture) Stop() error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// BGP message types.
const (
	MsgOpen         = 1
	MsgUpdate       = 2
	MsgNotification = 3
	MsgKeepalive    = 4
)

// Message is one BGP message as it arrived: At is when its last byte did.
type Message struct {
	At   time.Time
	Type uint8
	Len  int
	// NLRI and Withdrawn count the IPv4 prefixes an UPDATE carries in its
	// classic fields; an UPDATE with neither and no attributes is an
	// End-of-RIB.
	NLRI, Withdrawn int
	// Announced and Withdrawals are those prefixes.
	Announced, Withdrawals []netip.Prefix
}

// EndOfRIB reports whether m is an IPv4 unicast End-of-RIB marker.
func (m Message) EndOfRIB() bool { return m.Type == MsgUpdate && m.Len == 23 }

// Session is the BGP timeline of one TCP connection in one direction.
type Session struct {
	From, To netip.AddrPort
	Messages []Message
}

// Timeline is what a session's messages say.
type Timeline struct {
	// Open is the peer's OPEN; Established its first KEEPALIVE after it,
	// which puts the receiving side in Established.
	Open, Established time.Time
	// FirstUpdate and LastUpdate are the first and last UPDATE carrying
	// NLRI; EndOfRIB the End-of-RIB marker, if one came.
	FirstUpdate, LastUpdate, EndOfRIB time.Time
	Updates, NLRI                     int
}

// Timeline summarises s.
func (s Session) Timeline() Timeline {
	var t Timeline
	for _, m := range s.Messages {
		switch {
		case m.Type == MsgOpen && t.Open.IsZero():
			t.Open = m.At
		case m.Type == MsgKeepalive && !t.Open.IsZero() && t.Established.IsZero():
			t.Established = m.At
		case m.EndOfRIB():
			if t.EndOfRIB.IsZero() {
				t.EndOfRIB = m.At
			}
		case m.Type == MsgUpdate && m.NLRI > 0:
			if t.FirstUpdate.IsZero() {
				t.FirstUpdate = m.At
			}
			t.LastUpdate = m.At
			t.Updates++
			t.NLRI += m.NLRI
		}
	}
	return t
}

// Sessions reassembles the BGP messages peer sent to local (one TCP port of
// either being 179), one Session per connection, in order of the
// connections' first packet.
func (c *Capture) Sessions(peer, local netip.Addr) []Session {
	c.mu.Lock()
	pkts := append([]packet(nil), c.pkts...)
	c.mu.Unlock()
	type flow struct {
		s       *Session
		isn     uint32
		started bool
		next    uint32
		buf     []byte
		pending []packet
	}
	flows := map[[2]netip.AddrPort]*flow{}
	var order []*flow
	for _, p := range pkts {
		if p.outgoing || p.src.Addr() != peer || p.dst.Addr() != local || (p.src.Port() != 179 && p.dst.Port() != 179) {
			continue
		}
		key := [2]netip.AddrPort{p.src, p.dst}
		f := flows[key]
		if f == nil || p.flags&tcpSYN != 0 && f.started && len(f.s.Messages) > 0 {
			f = &flow{s: &Session{From: p.src, To: p.dst}}
			flows[key] = f
			order = append(order, f)
		}
		if p.flags&tcpSYN != 0 {
			f.isn, f.started, f.next = p.seq, true, p.seq+1
			continue
		}
		if !f.started {
			f.started, f.next = true, p.seq
		}
		f.pending = append(f.pending, p)
		// Take every pending segment that now continues the stream.
		for progress := true; progress; {
			progress = false
			for i := 0; i < len(f.pending); i++ {
				q := f.pending[i]
				off := int32(f.next - q.seq)
				end := int32(q.seq + uint32(len(q.payload)) - f.next)
				switch {
				case end <= 0: // nothing new: a retransmission or a bare ACK
					f.pending = append(f.pending[:i], f.pending[i+1:]...)
					i--
				case off >= 0:
					f.buf = append(f.buf, q.payload[off:]...)
					f.next += uint32(end)
					f.pending = append(f.pending[:i], f.pending[i+1:]...)
					i--
					progress = true
					f.buf = f.s.consume(f.buf, q.ts)
				}
			}
		}
	}
	out := make([]Session, 0, len(order))
	for _, f := range order {
		out = append(out, *f.s)
	}
	return out
}

// marker opens every BGP message.
var marker = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// consume takes the complete messages at the start of buf, all completed
// at ts, and returns the rest. A capture that begins in the middle of a
// session may begin in the middle of a message: bytes before the next
// marker are skipped.
func (s *Session) consume(buf []byte, ts time.Time) []byte {
	for len(buf) >= 19 {
		if [16]byte(buf[:16]) != marker {
			i := bytes.Index(buf[1:], marker[:])
			if i < 0 {
				// Keep a tail that may be the start of a marker.
				return buf[len(buf)-15:]
			}
			buf = buf[1+i:]
			continue
		}
		n := int(binary.BigEndian.Uint16(buf[16:18]))
		if n < 19 || n > 65535 {
			buf = buf[1:] // a false marker: look for the next
			continue
		}
		if len(buf) < n {
			break
		}
		m := Message{At: ts, Type: buf[18], Len: n}
		if m.Type == MsgUpdate {
			m.Withdrawals, m.Announced = parseUpdate(buf[19:n])
			m.Withdrawn, m.NLRI = len(m.Withdrawals), len(m.Announced)
		}
		s.Messages = append(s.Messages, m)
		buf = buf[n:]
	}
	return buf
}

// parseUpdate reads the withdrawn and announced IPv4 prefixes of an
// UPDATE body.
func parseUpdate(b []byte) (withdrawn, nlri []netip.Prefix) {
	if len(b) < 2 {
		return nil, nil
	}
	wl := int(binary.BigEndian.Uint16(b[0:2]))
	if len(b) < 2+wl+2 {
		return nil, nil
	}
	withdrawn = parsePrefixes(b[2 : 2+wl])
	al := int(binary.BigEndian.Uint16(b[2+wl : 4+wl]))
	if len(b) < 4+wl+al {
		return withdrawn, nil
	}
	return withdrawn, parsePrefixes(b[4+wl+al:])
}

func parsePrefixes(b []byte) []netip.Prefix {
	var out []netip.Prefix
	for len(b) > 0 {
		bits := int(b[0])
		l := (bits + 7) / 8
		if bits > 32 || len(b) < 1+l {
			break
		}
		var a [4]byte
		copy(a[:], b[1:1+l])
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(a), bits))
		b = b[1+l:]
	}
	return out
}

// Coverage says when the UPDATEs of a session had announced, and
// withdrawn, each prefix of a set at least once.
type Coverage struct {
	// Announced is when the n-th distinct prefix of the set was first
	// announced; zero if fewer were. Withdrawn likewise for withdrawals.
	Announced, Withdrawn time.Time
	// NAnnounced and NWithdrawn count the distinct prefixes of the set
	// announced and withdrawn.
	NAnnounced, NWithdrawn int
	// Updates counts the UPDATEs that carried any prefix of the set.
	Updates int
}

// Cover follows s's UPDATEs for the n prefixes that in selects.
func (s Session) Cover(in func(netip.Prefix) bool, n int) Coverage {
	var c Coverage
	ann, wd := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for _, m := range s.Messages {
		if m.Type != MsgUpdate {
			continue
		}
		hit := false
		for _, p := range m.Announced {
			if in(p) {
				hit = true
				if !ann[p] {
					ann[p] = true
					if len(ann) == n {
						c.Announced = m.At
					}
				}
			}
		}
		for _, p := range m.Withdrawals {
			if in(p) {
				hit = true
				if !wd[p] {
					wd[p] = true
					if len(wd) == n {
						c.Withdrawn = m.At
					}
				}
			}
		}
		if hit {
			c.Updates++
		}
	}
	c.NAnnounced, c.NWithdrawn = len(ann), len(wd)
	return c
}

// Best returns the session that carried the most NLRI, which is the one
// that came up (a collision's loser or a refused attempt carries none).
func Best(sessions []Session) (Session, bool) {
	if len(sessions) == 0 {
		return Session{}, false
	}
	sort.SliceStable(sessions, func(i, j int) bool {
		return sessions[i].Timeline().NLRI > sessions[j].Timeline().NLRI
	})
	return sessions[0], true
}
