package routing

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// decodedRequest is a route request read back attribute by attribute.
type decodedRequest struct {
	Type, Flags                      uint16
	Family, DstLen, Tos, HeaderTable uint8
	Protocol, Scope, RouteType       uint8
	RouteFlags                       uint32
	Table, OIF, Priority, MTU        uint32
	Dst, Gw                          string
}

func decodeRequests(t *testing.T, b []byte) []decodedRequest {
	t.Helper()
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		t.Fatalf("parsing requests: %v", err)
	}
	var out []decodedRequest
	for _, m := range msgs {
		rt := nl.DeserializeRtMsg(m.Data)
		d := decodedRequest{Type: m.Header.Type, Flags: m.Header.Flags, Family: rt.Family, DstLen: rt.Dst_len, Tos: rt.Tos,
			HeaderTable: rt.Table, Protocol: rt.Protocol, Scope: rt.Scope, RouteType: rt.Type, RouteFlags: rt.Flags}
		attrs, err := nl.ParseRouteAttr(m.Data[rt.Len():])
		if err != nil {
			t.Fatalf("parsing attributes: %v", err)
		}
		u32 := func(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.RTA_TABLE:
				d.Table = u32(a.Value)
			case unix.RTA_OIF:
				d.OIF = u32(a.Value)
			case unix.RTA_PRIORITY:
				d.Priority = u32(a.Value)
			case unix.RTA_DST:
				ip, _ := netip.AddrFromSlice(a.Value)
				d.Dst = ip.String()
			case unix.RTA_GATEWAY:
				ip, _ := netip.AddrFromSlice(a.Value)
				d.Gw = ip.String()
			case unix.RTA_METRICS:
				metrics, err := nl.ParseRouteAttr(a.Value)
				if err != nil {
					t.Fatalf("parsing metrics: %v", err)
				}
				for _, m := range metrics {
					if m.Attr.Type == unix.RTAX_MTU {
						d.MTU = u32(m.Value)
					}
				}
			default:
				t.Errorf("unexpected attribute %d", a.Attr.Type)
			}
		}
		out = append(out, d)
	}
	return out
}

func TestAppendRouteRequest(t *testing.T) {
	var q requests
	add := toNetlink(Route{Dst: netip.MustParsePrefix("10.5.114.0/24"), Gw: netip.MustParseAddr("10.4.94.12"), LinkIndex: 2, OnLink: true, Table: 1000, MTU: 1400})
	q.add(opAdd, &add)
	repl := toNetlink(Route{Dst: netip.MustParsePrefix("fd00:5::/64"), LinkIndex: 3})
	q.add(opReplace, &repl)
	del := deleteRequest(ownRoute{key: RouteKey{Table: 100, Dst: netip.MustParsePrefix("0.0.0.0/0")}, priority: 0})
	q.add(opDelete, &del)
	if q.len() != 3 || q.start(1) != q.ends[0] {
		t.Fatalf("requests hold %d messages ending at %v", q.len(), q.ends)
	}
	req := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK)
	want := []decodedRequest{{
		Type: unix.RTM_NEWROUTE, Flags: req | unix.NLM_F_CREATE | unix.NLM_F_EXCL,
		Family: unix.AF_INET, DstLen: 24, HeaderTable: 0, Protocol: Protocol, Scope: unix.RT_SCOPE_UNIVERSE, RouteType: unix.RTN_UNICAST,
		RouteFlags: unix.RTNH_F_ONLINK, Table: 1000, OIF: 2, MTU: 1400, Dst: "10.5.114.0", Gw: "10.4.94.12",
	}, {
		Type: unix.RTM_NEWROUTE, Flags: req | unix.NLM_F_REPLACE,
		Family: unix.AF_INET6, DstLen: 64, HeaderTable: unix.RT_TABLE_MAIN, Protocol: Protocol, Scope: unix.RT_SCOPE_UNIVERSE, RouteType: unix.RTN_UNICAST,
		Table: unix.RT_TABLE_MAIN, OIF: 3, Dst: "fd00:5::",
	}, {
		// A default route has no RTA_DST; the delete names our protocol
		// and matches any scope.
		Type: unix.RTM_DELROUTE, Flags: req,
		Family: unix.AF_INET, HeaderTable: 100, Protocol: Protocol, Scope: unix.RT_SCOPE_NOWHERE, Table: 100,
	}}
	if diff := cmp.Diff(want, decodeRequests(t, q.buf)); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func ackMessage(errno syscall.Errno, flags uint16, extra []byte) syscall.NetlinkMessage {
	data := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
	data = append(data, make([]byte, unix.SizeofNlMsghdr)...) // the echoed request header
	binary.NativeEndian.PutUint32(data[4:], unix.SizeofNlMsghdr)
	data = append(data, extra...)
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.NLMSG_ERROR, Flags: flags}, Data: data}
}

func TestAckError(t *testing.T) {
	if err := ackError(ackMessage(0, 0, nil)); err != nil {
		t.Errorf("success acknowledgement: %v", err)
	}
	err := ackError(ackMessage(unix.EEXIST, 0, nil))
	if !errors.Is(err, unix.EEXIST) || err.Error() != "file exists" {
		t.Errorf("plain error: %v", err)
	}
	msg := appendAttr(nil, unix.NLMSGERR_ATTR_MSG, append([]byte("Nexthop device is not up"), 0))
	for _, flags := range []uint16{unix.NLM_F_ACK_TLVS | unix.NLM_F_CAPPED, unix.NLM_F_ACK_TLVS} {
		err := ackError(ackMessage(unix.ENETDOWN, flags, msg))
		if !errors.Is(err, unix.ENETDOWN) || err.Error() != "network is down (Nexthop device is not up)" {
			t.Errorf("extended error, flags %#x: %v", flags, err)
		}
	}
}
