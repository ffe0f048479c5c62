package snat

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lab is a pod, a node and a remote host, each in its own namespace:
//
//	pod eth0 10.244.1.5/24 ── pod0 10.244.1.1/24  node  up0 192.0.2.1/24 ── eth0 192.0.2.2/24 remote
//
// The remote has no route to pods: only masqueraded traffic reaches it
// and gets replies back.
type lab struct {
	pod, node, remote *testNS
	up0               int
}

var (
	labPod    = netip.MustParseAddr("10.244.1.5")
	labNode   = netip.MustParseAddr("192.0.2.1")
	labRemote = netip.MustParseAddr("192.0.2.2")
)

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{pod: newTestNS(t, "pod"), node: newTestNS(t, "node"), remote: newTestNS(t, "remote")}
	l.node.vethTo(t, "pod0", l.pod, "eth0")
	l.node.vethTo(t, "up0", l.remote, "eth0")
	l.pod.addAddr(t, "eth0", "10.244.1.5/24")
	l.node.addAddr(t, "pod0", "10.244.1.1/24")
	l.node.addAddr(t, "up0", "192.0.2.1/24")
	l.remote.addAddr(t, "eth0", "192.0.2.2/24")
	l.pod.defaultRoute(t, "10.244.1.1")
	l.node.sysctl(t, "/proc/sys/net/ipv4/ip_forward", "1")
	l.up0 = l.node.link(t, "up0").Attrs().Index

	// Sockets hand out CHECKSUM_PARTIAL packets, which the hooks on up0
	// see. The node finishes their checksums in software after the hooks
	// (tx offload off), and the receivers check them (rx offload off)
	// rather than trust whatever the veth says.
	l.node.setOffload(t, "up0", unix.ETHTOOL_STXCSUM, false)
	l.node.setOffload(t, "pod0", unix.ETHTOOL_STXCSUM, false)
	l.remote.setOffload(t, "eth0", unix.ETHTOOL_SRXCSUM, false)
	l.pod.setOffload(t, "eth0", unix.ETHTOOL_SRXCSUM, false)
	return l
}

func (l *lab) configure(t *testing.T, d *Datapath) {
	t.Helper()
	must(t, d.SetLocalPods([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}))
	must(t, d.SetRoutable([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}))
	must(t, d.SetPortRange(portMin, portMax))
	must(t, d.SetDevice(l.up0, labNode))
	l.node.do(t, func() { must(t, d.Attach(l.up0)) })
}

// udpRoundTrip sends from the pod's port to the remote, checks what the
// remote sees as the source, answers, and checks the answer reaches the
// pod's socket. It returns the source the remote saw.
func (l *lab) udpRoundTrip(t *testing.T, podPort int, payload []byte) netip.AddrPort {
	t.Helper()
	var rc, pc *net.UDPConn
	var err error
	l.remote.do(t, func() { rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: labRemote.AsSlice(), Port: 5000}) })
	must(t, err)
	defer rc.Close()
	l.pod.do(t, func() { pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: labPod.AsSlice(), Port: podPort}) })
	must(t, err)
	defer pc.Close()

	if _, err := pc.WriteToUDPAddrPort(payload, netip.AddrPortFrom(labRemote, 5000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	rc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := rc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("remote got nothing from the pod: %v", err)
	}
	if !bytes.Equal(buf[:n], payload) {
		t.Fatalf("remote got %d bytes, not the %d sent", n, len(payload))
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if from.Addr() != labNode || from.Port() < portMin || from.Port() > portMax {
		t.Fatalf("remote saw the pod as %s, want %s with a port in %d-%d", from, labNode, portMin, portMax)
	}
	if _, err := rc.WriteToUDPAddrPort([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, back, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("the reply did not reach the pod's socket: %v", err)
	}
	if string(buf[:n]) != "pong" || back.Addr().Unmap() != labRemote || back.Port() != 5000 {
		t.Fatalf("pod got %q from %s", buf[:n], back)
	}
	return from
}

func TestAttachVeth(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		t.Run(mode.String(), func(t *testing.T) {
			l := newLab(t)
			d := load(t, Options{Attach: mode})
			l.configure(t, d)
			if got := d.Attached(); len(got) != 1 || got[0] != l.up0 {
				t.Fatalf("Attached() = %v, want [%d]", got, l.up0)
			}
			// Attaching again changes nothing.
			l.node.do(t, func() { must(t, d.Attach(l.up0)) })

			first := l.udpRoundTrip(t, 40000, []byte("ping"))
			if again := l.udpRoundTrip(t, 40000, []byte("ping")); again != first {
				t.Errorf("the same flow left as %s, then as %s", first, again)
			}
			l.udpRoundTrip(t, 40001, bytes.Repeat([]byte("x"), 1400))
			t.Run("fragments", func(t *testing.T) { l.fragmentsDropped(t, d) })

			t.Run("tcp", func(t *testing.T) { l.tcpRoundTrip(t) })
			t.Run("icmp port unreachable", func(t *testing.T) { l.portUnreachable(t) })

			st := stats(t, d)
			if st.DroppedError != 0 || st.DroppedNoPort != 0 {
				t.Errorf("drops: %+v", st)
			}
			l.node.do(t, func() { must(t, d.Detach(l.up0)) })
			if got := d.Attached(); len(got) != 0 {
				t.Errorf("Attached() after Detach = %v", got)
			}
			l.node.do(t, func() { must(t, d.Detach(l.up0)) })
		})
	}
}

// fragmentsDropped sends a datagram bigger than the MTU: it leaves in
// fragments, which cannot be masqueraded, so they are dropped and
// counted, never leaked with the pod's address.
func (l *lab) fragmentsDropped(t *testing.T, d *Datapath) {
	var rc, pc *net.UDPConn
	var err error
	l.remote.do(t, func() { rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: labRemote.AsSlice(), Port: 5002}) })
	must(t, err)
	defer rc.Close()
	l.pod.do(t, func() { pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: labPod.AsSlice(), Port: 40002}) })
	must(t, err)
	defer pc.Close()
	before := stats(t, d)
	if _, err := pc.WriteToUDPAddrPort(make([]byte, 3000), netip.AddrPortFrom(labRemote, 5002)); err != nil {
		t.Fatal(err)
	}
	rc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, from, err := rc.ReadFromUDPAddrPort(make([]byte, 4096)); err == nil {
		t.Fatalf("remote got %d bytes from %s", n, from)
	}
	if got := stats(t, d).DroppedUnsupported - before.DroppedUnsupported; got < 2 {
		t.Errorf("%d fragments counted as dropped, want at least 2", got)
	}
}

// tcpRoundTrip opens a connection from the pod and moves enough data
// both ways for segmentation offload to make large packets.
func (l *lab) tcpRoundTrip(t *testing.T) {
	var ln net.Listener
	var err error
	l.remote.do(t, func() { ln, err = net.Listen("tcp4", "192.0.2.2:5001") })
	must(t, err)
	defer ln.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	type result struct {
		peer net.Addr
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(data))
		if _, err := io.ReadFull(c, got); err != nil {
			done <- result{err: err}
			return
		}
		_, err = c.Write(got)
		done <- result{peer: c.RemoteAddr(), err: err}
	}()
	var c net.Conn
	l.pod.do(t, func() {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: labPod.AsSlice()}, Timeout: 3 * time.Second}
		c, err = dl.Dial("tcp4", "192.0.2.2:5001")
	})
	if err != nil {
		t.Fatalf("pod could not connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echo differs")
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("remote side: %v", r.err)
	}
	peer := r.peer.(*net.TCPAddr).AddrPort()
	if peer.Addr().Unmap() != labNode {
		t.Errorf("remote saw the connection from %s, want %s", peer, labNode)
	}
}

// portUnreachable sends to a closed port of the remote: its ICMP error,
// addressed to the node, must reach the pod's connected socket.
func (l *lab) portUnreachable(t *testing.T) {
	var c *net.UDPConn
	var err error
	l.pod.do(t, func() {
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: labPod.AsSlice()}, &net.UDPAddr{IP: labRemote.AsSlice(), Port: 5999})
	})
	must(t, err)
	defer c.Close()
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = c.Read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("pod's socket got %v, want connection refused from the ICMP error", err)
	}
}

func TestPinnedRestart(t *testing.T) {
	needRoot(t)
	pin := bpffs(t)
	l := newLab(t)
	d := load(t, Options{PinDir: pin})
	l.configure(t, d)
	first := l.udpRoundTrip(t, 40000, []byte("ping"))
	must(t, d.Close())

	// Without the agent the programs stay attached and flows keep working.
	if got := l.udpRoundTrip(t, 40000, []byte("ping")); got != first {
		t.Fatalf("after Close the flow left as %s, before as %s", got, first)
	}

	d2 := load(t, Options{PinDir: pin})
	if got := d2.Attached(); len(got) != 1 || got[0] != l.up0 {
		t.Fatalf("reloaded datapath sees attachments %v, want [%d]", got, l.up0)
	}
	tr, err := d2.Translations()
	must(t, err)
	if len(tr) != 1 || tr[0].NAT != first {
		t.Fatalf("reloaded translations %+v, want the flow on %s", tr, first)
	}
	// The upgrade path: configure again and swap the program in place.
	l.configure(t, d2)
	if got := l.udpRoundTrip(t, 40000, []byte("ping")); got != first {
		t.Fatalf("after the reload the flow left as %s, before as %s", got, first)
	}
	must(t, d2.Close())

	// A different size makes the pinned NAT maps incompatible: replaced.
	d3 := load(t, Options{PinDir: pin, NATEntries: 1024})
	tr, err = d3.Translations()
	must(t, err)
	if len(tr) != 0 {
		t.Fatalf("replaced NAT map still holds %+v", tr)
	}
	must(t, d3.Close())

	l.node.do(t, func() { must(t, Remove(pin)) })
	if _, err := filepath.Glob(filepath.Join(pin, "*")); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(pin, "*")); len(left) != 0 {
		t.Errorf("Remove left %v", left)
	}
	// Detached: the pod's packets now leave untranslated, and the remote
	// sees the pod's own address.
	var rc, pc *net.UDPConn
	var err2 error
	l.remote.do(t, func() { rc, err2 = net.ListenUDP("udp4", &net.UDPAddr{IP: labRemote.AsSlice(), Port: 5000}) })
	must(t, err2)
	defer rc.Close()
	l.pod.do(t, func() { pc, err2 = net.ListenUDP("udp4", &net.UDPAddr{IP: labPod.AsSlice(), Port: 40000}) })
	must(t, err2)
	defer pc.Close()
	if _, err := pc.WriteToUDPAddrPort([]byte("raw"), netip.AddrPortFrom(labRemote, 5000)); err != nil {
		t.Fatal(err)
	}
	rc.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, from, err := rc.ReadFromUDPAddrPort(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	if from.Addr().Unmap() != labPod {
		t.Errorf("after Remove the remote saw %s, want the pod's own address", from)
	}
}

// bpffs mounts a bpf file system for the test on a temporary directory.
func bpffs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := EnsureBPFFS(dir); err != nil {
		t.Skipf("cannot mount a bpf file system: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	// Mounting again is a no-op.
	must(t, EnsureBPFFS(dir))
	var st unix.Statfs_t
	must(t, unix.Statfs(dir, &st))
	if st.Type != unix.BPF_FS_MAGIC {
		t.Fatalf("%s is not a bpf file system", dir)
	}
	return filepath.Join(dir, "route-agent")
}
