package routing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Encap is a route's lightweight-tunnel encapsulation, `encap ip id 1 dst
// 10.99.0.2` in `ip route`: the tunnel key a flow-based (external) tunnel
// device sends the route's packets with. Geneve needs it: the kernel's
// geneve device has no forwarding database, so in external mode each route
// names the peer itself. The zero Encap means none.
//
// Only IPv4 underlays are supported: the netlink library cannot read back
// the kernel's IPv6 encap attributes (its decoder fails on the traffic
// class and flags the kernel always reports), so a route whose encap could
// not be compared would be rewritten on every reconcile.
type Encap struct {
	// ID is the tunnel ID: the Geneve or VXLAN network identifier.
	ID uint64
	// Dst is the outer destination: the peer node's underlay address.
	Dst netip.Addr
}

// IsZero reports whether e is no encapsulation.
func (e Encap) IsZero() bool { return e == Encap{} }

func (e Encap) String() string {
	return "encap ip id " + strconv.FormatUint(e.ID, 10) + " dst " + e.Dst.String()
}

func (e Encap) check() error {
	switch {
	case !e.Dst.IsValid():
		return fmt.Errorf("encap id %d: no destination", e.ID)
	case !e.Dst.Is4():
		return fmt.Errorf("encap destination %s: only IPv4 underlays are supported", e.Dst)
	case !e.Dst.IsGlobalUnicast():
		return fmt.Errorf("encap destination %s is not a unicast address", e.Dst)
	}
	return nil
}

// The attributes of LWTUNNEL_ENCAP_IP (enum lwtunnel_ip_t), which
// neither x/sys/unix nor the netlink library define.
const (
	lwtunnelIPID  = 1
	lwtunnelIPDst = 2
)

// ipEncap is Encap as the netlink library's Encap, LWTUNNEL_ENCAP_IP.
// The library writes any Encap but reads back only the types it knows,
// which this is not: readEncaps does that.
type ipEncap struct{ e Encap }

func (x *ipEncap) Type() int { return nl.LWTUNNEL_ENCAP_IP }

// Encode writes the attributes iproute2 writes for `encap ip id ID dst
// DST`: the ID big-endian (the kernel reads it as __be64), the address in
// network order.
func (x *ipEncap) Encode() ([]byte, error) {
	if err := x.e.check(); err != nil {
		return nil, err
	}
	var b []byte
	b = appendAttr(b, lwtunnelIPID, binary.BigEndian.AppendUint64(nil, x.e.ID))
	dst := x.e.Dst.As4()
	b = appendAttr(b, lwtunnelIPDst, dst[:])
	return b, nil
}

// Decode reads the nested attributes of RTA_ENCAP, ignoring those the
// agent never sets (source, TTL, TOS, flags), which the kernel reports
// with their zero values.
func (x *ipEncap) Decode(b []byte) error {
	e, err := decodeIPEncap(b)
	x.e = e
	return err
}

func (x *ipEncap) String() string { return x.e.String() }

func (x *ipEncap) Equal(o netlink.Encap) bool {
	y, ok := o.(*ipEncap)
	return ok && x.e == y.e
}

func decodeIPEncap(b []byte) (Encap, error) {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return Encap{}, fmt.Errorf("parsing encap attributes: %w", err)
	}
	var e Encap
	for _, a := range attrs {
		switch a.Attr.Type {
		case lwtunnelIPID:
			if len(a.Value) != 8 {
				return Encap{}, fmt.Errorf("encap id: %d bytes, want 8", len(a.Value))
			}
			e.ID = binary.BigEndian.Uint64(a.Value)
		case lwtunnelIPDst:
			if len(a.Value) != 4 {
				return Encap{}, fmt.Errorf("encap destination: %d bytes, want 4", len(a.Value))
			}
			e.Dst = netip.AddrFrom4([4]byte(a.Value))
		}
	}
	return e, nil
}

// encapKey locates one of our routes for readEncaps: the kernel's key of
// it, table and destination.
type encapKey = RouteKey

// readEncaps dumps the IPv4 routes of protocol Protocol in namespace ns
// (netns.None() for the current one) and returns the IP encapsulation of
// those that carry one. It reads the raw messages because the netlink
// library drops LWTUNNEL_ENCAP_IP when it parses a route.
func readEncaps(ns netns.NsHandle) (map[encapKey]Encap, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	msg := nl.NewRtMsg()
	msg.Family = unix.AF_INET
	req.AddData(msg)
	if err := s.Send(req); err != nil {
		return nil, fmt.Errorf("asking for the routes: %w", err)
	}
	pid, err := s.GetPid()
	if err != nil {
		return nil, fmt.Errorf("reading the netlink socket's port: %w", err)
	}
	out := map[encapKey]Encap{}
	interrupted := false
	for {
		msgs, from, err := s.Receive()
		if err != nil {
			return nil, fmt.Errorf("reading the routes: %w", err)
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Pid != pid {
				continue
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if interrupted {
					return nil, netlink.ErrDumpInterrupted
				}
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return nil, fmt.Errorf("reading the routes: %w", syscall.Errno(-errno))
					}
				}
				return nil, errors.New("reading the routes: netlink error without an errno")
			case unix.RTM_NEWROUTE:
				k, e, ok, err := encapOf(m.Data)
				if err != nil {
					return nil, err
				}
				if ok {
					out[k] = e
				}
			}
		}
	}
}

// encapOf reads the key and IP encapsulation of one RTM_NEWROUTE message;
// ok is false for a route that is not ours or has no IP encapsulation.
func encapOf(b []byte) (encapKey, Encap, bool, error) {
	if len(b) < unix.SizeofRtMsg {
		return encapKey{}, Encap{}, false, fmt.Errorf("route message of %d bytes", len(b))
	}
	rt := nl.DeserializeRtMsg(b)
	if rt.Protocol != Protocol || rt.Family != unix.AF_INET {
		return encapKey{}, Encap{}, false, nil
	}
	attrs, err := nl.ParseRouteAttr(b[rt.Len():])
	if err != nil {
		return encapKey{}, Encap{}, false, fmt.Errorf("parsing a route's attributes: %w", err)
	}
	table := int(rt.Table)
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), int(rt.Dst_len))
	var encapType uint16
	var encap []byte
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_TABLE:
			if len(a.Value) == 4 {
				table = int(binary.NativeEndian.Uint32(a.Value))
			}
		case unix.RTA_DST:
			if len(a.Value) == 4 {
				dst = netip.PrefixFrom(netip.AddrFrom4([4]byte(a.Value)), int(rt.Dst_len))
			}
		case unix.RTA_ENCAP_TYPE:
			if len(a.Value) >= 2 {
				encapType = binary.NativeEndian.Uint16(a.Value)
			}
		case unix.RTA_ENCAP:
			encap = a.Value
		}
	}
	if encapType != nl.LWTUNNEL_ENCAP_IP || encap == nil {
		return encapKey{}, Encap{}, false, nil
	}
	e, err := decodeIPEncap(encap)
	if err != nil {
		return encapKey{}, Encap{}, false, fmt.Errorf("route %s: %w", dst, err)
	}
	return encapKey{Table: table, Dst: dst}, e, true, nil
}
