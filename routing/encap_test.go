package routing

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The attributes `ip route add ... encap ip id 7 dst 10.99.0.2` sends, as
// iproute2 2.x writes them: LWTUNNEL_IP_ID as a big-endian u64, then
// LWTUNNEL_IP_DST.
func TestEncapEncodesLikeIproute2(t *testing.T) {
	got, err := (&ipEncap{Encap{ID: 7, Dst: netip.MustParseAddr("10.99.0.2")}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		12, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7, // len 12, LWTUNNEL_IP_ID, be64 7
		8, 0, 2, 0, 10, 99, 0, 2, // len 8, LWTUNNEL_IP_DST
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Encode = % x, want % x", got, want)
	}
	var back ipEncap
	if err := back.Decode(got); err != nil || back.e != (Encap{ID: 7, Dst: netip.MustParseAddr("10.99.0.2")}) {
		t.Errorf("Decode(Encode) = %v, %v", back.e, err)
	}
}

func TestEncapDecodeIgnoresTheKernelsZeroAttributes(t *testing.T) {
	// What the kernel dumps: ID, DST, SRC, TTL, TOS, FLAGS.
	b := []byte{
		12, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02,
		8, 0, 2, 0, 192, 0, 2, 9,
		8, 0, 3, 0, 0, 0, 0, 0,
		5, 0, 4, 0, 0, 0, 0, 0,
		5, 0, 5, 0, 0, 0, 0, 0,
		6, 0, 6, 0, 0, 0, 0, 0,
	}
	e, err := decodeIPEncap(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Encap{ID: 0x102, Dst: netip.MustParseAddr("192.0.2.9")}); e != want {
		t.Errorf("decoded %v, want %v", e, want)
	}
	if _, err := decodeIPEncap([]byte{8, 0, 1, 0, 0, 0, 0, 1}); err == nil {
		t.Error("a 4-byte ID decoded without an error")
	}
}

func TestEncapChecks(t *testing.T) {
	for _, tc := range []struct {
		r    Route
		want string
	}{
		{Route{Dst: netip.MustParsePrefix("10.5.0.0/24"), LinkIndex: 3, Encap: Encap{ID: 1}}, "no destination"},
		{Route{Dst: netip.MustParsePrefix("10.5.0.0/24"), LinkIndex: 3, Encap: Encap{ID: 1, Dst: netip.MustParseAddr("fd00::2")}}, "only IPv4 underlays"},
		{Route{Dst: netip.MustParsePrefix("fd05::/64"), LinkIndex: 3, Encap: Encap{ID: 1, Dst: netip.MustParseAddr("10.0.0.2")}}, "IPv6 route"},
		{Route{Dst: netip.MustParsePrefix("10.5.0.0/24"), LinkIndex: 3, Encap: Encap{ID: 1, Dst: netip.MustParseAddr("224.0.0.1")}}, "not a unicast"},
	} {
		err := tc.r.check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: check() = %v, want %q", tc.r, err, tc.want)
		}
	}
}

// Routes with an IP encapsulation go in, read back equal (the netlink
// library alone would lose the encapsulation), and a second Set writes
// nothing. The kernel takes `encap ip` on any device; the geneve device
// that needs it in production is not on every kernel.
func TestSetEncapRoutesRoundTrip(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	e1 := Encap{ID: 1, Dst: netip.MustParseAddr("10.99.0.2")}
	routes := []Route{
		{Dst: netip.MustParsePrefix("10.5.1.0/24"), Gw: netip.MustParseAddr("10.5.1.0"), LinkIndex: l.eth0, OnLink: true, Encap: e1},
		{Dst: netip.MustParsePrefix("10.5.2.0/24"), Gw: netip.MustParseAddr("10.5.2.0"), LinkIndex: l.eth0, OnLink: true, Encap: Encap{ID: 1, Dst: netip.MustParseAddr("10.99.0.3")}},
		route("10.5.3.0/24", "10.0.0.2", l.eth0),
	}
	mustSet(t, k, routes)
	encaps, err := readEncaps(l.ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(encaps) != 2 || encaps[routes[0].Key()] != e1 {
		t.Errorf("encapsulations in the kernel: %v", encaps)
	}
	// iproute2 reads the same from the kernel.
	ip := exec.Command("nsenter", "--net=/proc/self/fd/3", "ip", "route", "show", "10.5.1.0/24")
	fd, err := unix.Dup(int(l.ns))
	if err != nil {
		t.Fatal(err)
	}
	nsFile := os.NewFile(uintptr(fd), "netns")
	defer nsFile.Close()
	ip.ExtraFiles = []*os.File{nsFile}
	out, err := ip.CombinedOutput()
	if err != nil {
		t.Fatalf("ip route show: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "encap ip id 1 ") || !strings.Contains(string(out), " dst 10.99.0.2 ") {
		t.Errorf("ip route shows %q, want the encapsulation", out)
	}

	events := l.events(t)
	before := k.Stats()
	mustSet(t, k, routes)
	if seen := l.settle(t, events); len(seen) != 0 {
		t.Errorf("the second Set changed %d kernel routes, want none: %v", len(seen), seen)
	}
	if after := k.Stats(); after != before {
		t.Errorf("the second Set wrote: stats %+v, then %+v", before, after)
	}

	// A peer that moved gets its route replaced; a route that lost its
	// encapsulation is replaced without one.
	routes[0].Encap.Dst = netip.MustParseAddr("10.99.0.9")
	routes[1].Encap = Encap{}
	mustSet(t, k, routes)
	encaps, err = readEncaps(l.ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(encaps) != 1 || encaps[routes[0].Key()] != routes[0].Encap {
		t.Errorf("after the change, encapsulations in the kernel: %v", encaps)
	}
	var plain []netlink.Route
	for _, nr := range l.kernelRoutes(t, Protocol) {
		if nr.Dst.String() == "10.5.2.0/24" {
			plain = append(plain, nr)
		}
	}
	if len(plain) != 1 {
		t.Fatalf("10.5.2.0/24: %d routes", len(plain))
	}
}
