package routing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The writer sends route requests in batches: many requests in one
// sendmsg, with an acknowledgement asked for the last one only, so that the
// kernel answers a batch with one message plus one per failed request. The
// kernel applies route changes one at a time under its lock, so sockets in
// parallel do not help (measured: slower than one); fewer system calls and
// less work per request in Go do.

type op uint8

const (
	opAdd     op = iota + 1 // create, failing with EEXIST rather than overwrite
	opReplace               // overwrite the route holding the key, failing with ENOENT if none
	opDelete
)

func (o op) verb() string {
	switch o {
	case opAdd:
		return "adding"
	case opReplace:
		return "replacing"
	}
	return "deleting"
}

// requests are encoded route requests, sent in the order added.
type requests struct {
	buf  []byte
	ends []int // where each request ends in buf
}

func (q *requests) add(o op, r *netlink.Route) {
	q.buf = appendRouteRequest(q.buf, o, r)
	q.ends = append(q.ends, len(q.buf))
}

func (q *requests) len() int { return len(q.ends) }

func (q *requests) start(i int) int {
	if i == 0 {
		return 0
	}
	return q.ends[i-1]
}

const (
	// batchSize bounds the requests in one sendmsg: the answers to its
	// failed requests must fit the socket's receive buffer, or the kernel
	// drops them.
	batchSize = 1024
	// smallBatch is used when the buffer cannot be raised past rmem_max.
	smallBatch  = 128
	ackBuffer   = 4 << 20
	ackDeadline = 30 * time.Second
)

type writer struct {
	sock  *nl.NetlinkSocket
	seq   uint32
	batch int
	rbuf  []byte
}

func newWriter(ns netns.NsHandle) (*writer, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	w := &writer{sock: s, batch: batchSize, rbuf: make([]byte, 1<<16)}
	if err := s.SetReceiveBufferSize(ackBuffer, true); err != nil {
		w.batch = smallBatch
		_ = s.SetReceiveBufferSize(ackBuffer, false)
	}
	// An error then carries only the header of the failed request, and the
	// kernel's own explanation ("Nexthop device is not up").
	_ = unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = s.SetExtAck(true)
	return w, nil
}

func (w *writer) close() { w.sock.Close() }

// run sends the requests in order and returns the kernel's answer to each:
// nil or the error. It stops between batches when ctx ends.
func (w *writer) run(ctx context.Context, q *requests) []error {
	errs := make([]error, q.len())
	for first := 0; first < q.len(); first += w.batch {
		last := min(first+w.batch, q.len())
		if err := ctx.Err(); err != nil {
			for i := first; i < q.len(); i++ {
				errs[i] = fmt.Errorf("not sent: %w", err)
			}
			break
		}
		w.send(q, first, last, errs[first:last])
	}
	return errs
}

// send sends requests first to last-1 in one datagram.
func (w *writer) send(q *requests, first, last int, errs []error) {
	base := w.seq + 1
	for i := first; i < last; i++ {
		w.seq++
		hdr := q.buf[q.start(i):]
		binary.NativeEndian.PutUint32(hdr[8:], w.seq)
		flags := binary.NativeEndian.Uint16(hdr[6:]) &^ unix.NLM_F_ACK
		if i == last-1 {
			flags |= unix.NLM_F_ACK
		}
		binary.NativeEndian.PutUint16(hdr[6:], flags)
	}
	fail := func(err error) {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	// The kernel handles every request of the datagram before sendto
	// returns, queueing an answer for each failed one and for the last.
	if err := unix.Sendto(w.sock.GetFd(), q.buf[q.start(first):q.ends[last-1]], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(fmt.Errorf("sending to the kernel: %w", err))
		return
	}
	deadline := time.Now().Add(ackDeadline)
	for {
		n, err := w.recv(deadline)
		if err != nil {
			// ENOBUFS: answers were dropped, so which requests failed is
			// unknown; the next dump tells.
			fail(fmt.Errorf("reading the kernel's answer: %w", err))
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(w.rbuf[:n])
		if err != nil {
			fail(fmt.Errorf("reading the kernel's answer: %w", err))
			return
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - base)
			if m.Header.Type != unix.NLMSG_ERROR || i < 0 || i >= len(errs) {
				continue // a late answer to an earlier batch that failed
			}
			errs[i] = ackError(m)
			if i == len(errs)-1 {
				return
			}
		}
	}
}

// recv reads one datagram into w.rbuf.
func (w *writer) recv(deadline time.Time) (int, error) {
	fd := w.sock.GetFd()
	for {
		n, from, err := unix.Recvfrom(fd, w.rbuf, 0)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, errNoAnswer
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, int(wait/time.Millisecond)+1); err != nil && err != unix.EINTR {
				return 0, err
			}
			continue
		case err != nil:
			return 0, err
		}
		if sa, ok := from.(*unix.SockaddrNetlink); ok && sa.Pid != nl.PidKernel {
			continue
		}
		return n, nil
	}
}

var errNoAnswer = errors.New("no answer from the kernel")

// ackError reads a netlink acknowledgement: nil, or the errno with the
// kernel's extended message when it gave one.
func ackError(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return errors.New("short acknowledgement")
	}
	errno := int32(binary.NativeEndian.Uint32(m.Data))
	if errno == 0 {
		return nil
	}
	err := error(syscall.Errno(-errno))
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+unix.SizeofNlMsghdr {
		return err
	}
	// The failed request comes back after the errno (its header only when
	// capped), then the attributes.
	off := 4 + unix.SizeofNlMsghdr
	if m.Header.Flags&unix.NLM_F_CAPPED == 0 {
		off = 4 + nlAlign(int(binary.NativeEndian.Uint32(m.Data[4:])))
	}
	for off+unix.SizeofRtAttr <= len(m.Data) {
		l := int(binary.NativeEndian.Uint16(m.Data[off:]))
		typ := binary.NativeEndian.Uint16(m.Data[off+2:])
		if l < unix.SizeofRtAttr || off+l > len(m.Data) {
			break
		}
		if typ == unix.NLMSGERR_ATTR_MSG {
			if msg := unix.ByteSliceToString(m.Data[off+unix.SizeofRtAttr : off+l]); msg != "" {
				return fmt.Errorf("%w (%s)", err, msg)
			}
		}
		off += nlAlign(l)
	}
	return err
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// appendRouteRequest appends one RTM_NEWROUTE or RTM_DELROUTE message for
// r to b, its sequence number left for the writer. It writes what toNetlink
// and deleteRequest fill in: family, destination, gateway, device, table,
// protocol, type, scope, TOS, metric, flags and MTU.
func appendRouteRequest(b []byte, o op, r *netlink.Route) []byte {
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	switch o {
	case opAdd:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	case opReplace:
		flags |= unix.NLM_F_REPLACE
	case opDelete:
		typ = unix.RTM_DELROUTE
	}
	start := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set below
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, 0) // sequence number, set by the writer
	b = binary.NativeEndian.AppendUint32(b, 0) // port: the kernel fills it in

	dstLen, dst := 0, []byte(nil)
	if r.Dst != nil {
		dstLen, _ = r.Dst.Mask.Size()
		dst = ipBytes(r.Family, r.Dst.IP)
	}
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	headerTable := uint8(unix.RT_TABLE_UNSPEC) // tables past 255 exist only as RTA_TABLE
	if table < 256 {
		headerTable = uint8(table)
	}
	b = append(b, uint8(r.Family), uint8(dstLen), 0, uint8(r.Tos), headerTable, uint8(r.Protocol), uint8(r.Scope), uint8(r.Type))
	b = binary.NativeEndian.AppendUint32(b, uint32(r.Flags))

	b = appendAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, uint32(table)))
	if dstLen > 0 {
		b = appendAttr(b, unix.RTA_DST, dst)
	}
	if r.Gw != nil {
		b = appendAttr(b, unix.RTA_GATEWAY, ipBytes(r.Family, r.Gw))
	}
	if r.LinkIndex > 0 {
		b = appendAttr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(r.LinkIndex)))
	}
	if r.Priority > 0 {
		b = appendAttr(b, unix.RTA_PRIORITY, binary.NativeEndian.AppendUint32(nil, uint32(r.Priority)))
	}
	if r.MTU > 0 {
		mtu := appendAttr(nil, unix.RTAX_MTU, binary.NativeEndian.AppendUint32(nil, uint32(r.MTU)))
		b = appendAttr(b, unix.RTA_METRICS, mtu)
	}
	// Route.check has validated the encapsulation, so Encode cannot fail.
	if e, ok := r.Encap.(*ipEncap); ok && o != opDelete {
		attrs, err := e.Encode()
		if err == nil {
			b = appendAttr(b, unix.RTA_ENCAP_TYPE, binary.NativeEndian.AppendUint16(nil, uint16(e.Type())))
			b = appendAttr(b, unix.RTA_ENCAP|unix.NLA_F_NESTED, attrs)
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func appendAttr(b []byte, typ uint16, value []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(value)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, value...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func ipBytes(af int, ip []byte) []byte {
	if af == netlink.FAMILY_V4 && len(ip) == 16 {
		return ip[12:]
	}
	return ip
}
