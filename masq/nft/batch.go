package nft

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// masqFlags are the NAT flags of the masquerade rule.
//
// NF_NAT_RANGE_PROTO_SPECIFIED makes the kernel apply the port range at
// all: nft_masq takes the range from registers but the flag from
// userspace, as nft sends it.
//
// NF_NAT_RANGE_PROTO_RANDOM_FULLY picks every new mapping's port at random
// in the range, as kube-proxy and ip-masq-agent (--random-fully) do.
// Without it the kernel first keeps the pod's own port when it lies in the
// range and reuses an existing mapping of the same source, and older
// kernels, the ones this fallback is for, then walk the range from a
// shared counter: two connections that start together pick the same
// port, and the second loses its first packet when conntrack refuses the
// duplicate entry.
const masqFlags = unix.NF_NAT_RANGE_PROTO_SPECIFIED | unix.NF_NAT_RANGE_PROTO_RANDOM_FULLY

// elementsPerMessage keeps a message's element list well under the 64 KiB
// a netlink attribute can hold: an element takes at most 40 bytes.
const elementsPerMessage = 1024

// batch collects one transaction. The nftables library marshals it, but
// the batch sends it itself, for two things the library (v0.3.0) cannot
// do: send a masquerade's flags together with its port range (it sends
// one or the other), and raise the socket's send buffer to fit a full
// routable set, a few megabytes, which netlink refuses in one message
// larger than the buffer.
type batch struct {
	conn *nftables.Conn // records messages instead of sending them
	msgs []netlink.Message
	n    int // operations added
	err  error
}

func newBatch() (*batch, error) {
	b := &batch{}
	c, err := nftables.New(nftables.WithTestDial(b.record))
	if err != nil {
		return nil, fmt.Errorf("preparing an nftables transaction: %w", err)
	}
	b.conn = c
	return b, nil
}

// record receives what the library would send. It acknowledges each
// message, which is all the library waits for before returning from
// Flush.
func (b *batch) record(req []netlink.Message) ([]netlink.Message, error) {
	if req == nil {
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
	}
	b.msgs = append(b.msgs, req...)
	return nil, nil
}

func (b *batch) empty() bool { return b.n == 0 && b.err == nil }

// commit sends the transaction to the kernel of namespace netns and waits
// for its verdict: all of it applies, or none.
func (b *batch) commit(netns int) error {
	if b.err != nil {
		return b.err
	}
	if err := b.conn.Flush(); err != nil {
		return fmt.Errorf("marshalling the transaction: %w", err)
	}
	msgs, size := make([]netlink.Message, 0, len(b.msgs)), 0
	for _, m := range b.msgs {
		m, err := withMasqFlags(m)
		if err != nil {
			return err
		}
		// The recording connection numbered the messages; this one does
		// it again, and sizes them after the change.
		m.Header.Length, m.Header.Sequence, m.Header.PID = 0, 0, 0
		msgs = append(msgs, m)
		size += 16 + len(m.Data)
	}

	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return fmt.Errorf("opening netfilter netlink: %w", err)
	}
	defer c.Close()
	// Errors then say what failed. Best effort: old kernels lack it.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	if err := raiseBuffers(c, size); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		return fmt.Errorf("setting a netlink deadline: %w", err)
	}
	sent, err := c.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("sending %d messages (%d bytes): %w", len(msgs), size, err)
	}
	acks := 0
	for _, m := range sent {
		if m.Header.Flags&netlink.Acknowledge != 0 {
			acks++
		}
	}
	for acks > 0 {
		replies, err := c.Receive()
		if err != nil {
			return fmt.Errorf("committing: %w", err)
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				acks--
			}
		}
	}
	return nil
}

// raiseBuffers makes the socket's buffers fit size bytes of messages:
// the send buffer for the transaction, and the receive buffer for the
// errors that come back, each of which repeats the message it is about.
func raiseBuffers(c *netlink.Conn, size int) error {
	const defaultBuffer = 208 << 10 // net.core.[rw]mem_default on most systems
	if size += 64 << 10; size <= defaultBuffer {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("raising the netlink buffers: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// FORCE, because [rw]mem_max are smaller; the agent has
		// CAP_NET_ADMIN.
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size))
	}); err != nil {
		return fmt.Errorf("raising the netlink buffers: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("raising the netlink buffers to %d bytes: %w", size, serr)
	}
	return nil
}

// withMasqFlags adds masqFlags to the masquerade expressions of a new
// rule message, and returns other messages as they are.
func withMasqFlags(m netlink.Message) (netlink.Message, error) {
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE) || len(m.Data) < 4 {
		return m, nil
	}
	bad := func(err error) (netlink.Message, error) {
		return m, fmt.Errorf("adding flags to a masquerade expression: %w", err)
	}
	attrs, err := netlink.UnmarshalAttributes(m.Data[4:])
	if err != nil {
		return bad(err)
	}
	changed := false
	for i, a := range attrs {
		if a.Type&^unix.NLA_F_NESTED != unix.NFTA_RULE_EXPRESSIONS {
			continue
		}
		elems, err := netlink.UnmarshalAttributes(a.Data)
		if err != nil {
			return bad(err)
		}
		for j, e := range elems {
			fields, err := netlink.UnmarshalAttributes(e.Data)
			if err != nil {
				return bad(err)
			}
			isMasq := false
			for _, f := range fields {
				if f.Type == unix.NFTA_EXPR_NAME && string(f.Data) == "masq\x00" {
					isMasq = true
				}
			}
			if !isMasq {
				continue
			}
			for k, f := range fields {
				if f.Type&^unix.NLA_F_NESTED != unix.NFTA_EXPR_DATA {
					continue
				}
				data, err := netlink.UnmarshalAttributes(f.Data)
				if err != nil {
					return bad(err)
				}
				for _, d := range data {
					if d.Type == unix.NFTA_MASQ_FLAGS {
						return bad(errors.New("it has flags already"))
					}
				}
				data = append(data, netlink.Attribute{Type: unix.NFTA_MASQ_FLAGS, Data: binaryutil.BigEndian.PutUint32(masqFlags)})
				// A Length left from the old data would be written as it is.
				fields[k].Length = 0
				if fields[k].Data, err = netlink.MarshalAttributes(data); err != nil {
					return bad(err)
				}
				changed = true
			}
			elems[j].Length = 0
			if elems[j].Data, err = netlink.MarshalAttributes(fields); err != nil {
				return bad(err)
			}
		}
		attrs[i].Length = 0
		if attrs[i].Data, err = netlink.MarshalAttributes(elems); err != nil {
			return bad(err)
		}
	}
	if !changed {
		return m, nil
	}
	body, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return bad(err)
	}
	m.Data = append(append([]byte(nil), m.Data[:4]...), body...)
	return m, nil
}

func (b *batch) fail(err error) {
	b.err = errors.Join(b.err, err)
}

func (b *batch) addSet(s *nftables.Set) {
	if err := b.conn.AddSet(s, nil); err != nil {
		b.fail(fmt.Errorf("adding set %s: %w", s.Name, err))
	}
	b.n++
}

func (b *batch) flushSet(s *nftables.Set) {
	b.conn.FlushSet(s)
	b.n++
}

func (b *batch) addElements(s *nftables.Set, spans []span) {
	b.elements(s, spans, b.conn.SetAddElements, "adding")
}

func (b *batch) deleteElements(s *nftables.Set, spans []span) {
	b.elements(s, spans, b.conn.SetDeleteElements, "deleting")
}

func (b *batch) elements(s *nftables.Set, spans []span, op func(*nftables.Set, []nftables.SetElement) error, verb string) {
	elems := spanElements(spans)
	for len(elems) > 0 {
		n := min(len(elems), elementsPerMessage)
		if err := op(s, elems[:n]); err != nil {
			b.fail(fmt.Errorf("%s elements of set %s: %w", verb, s.Name, err))
		}
		b.n++
		elems = elems[n:]
	}
}

// masqIdentity is what a masquerade expression adds to its rule's hash
// beyond what the library marshals: the flags sent with it.
func masqIdentity(e expr.Any) []byte {
	if _, ok := e.(*expr.Masq); ok {
		return binaryutil.BigEndian.PutUint32(masqFlags)
	}
	return nil
}
