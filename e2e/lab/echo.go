package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// EchoPort is where every pod's echo responder answers, over TCP and UDP:
// the echo service's port (RFC 862). Whatever arrives is sent back.
const EchoPort = 7

// echoEnv, set to a port, makes this package's executable an echo
// responder: the lab starts each pod's responder by re-running its own
// executable (the lab command or a test binary) inside the pod's
// namespace with echoEnv set, as it re-runs itself as the reaper.
//
// The reaper needs main and TestMain to call RunReaperIfAsked; the
// responder starts from this package's init instead, so every binary that
// imports the lab can serve its pods without its main knowing, and it is
// running before any main or TestMain could start a lab of its own.
const echoEnv = "ROUTE_AGENT_LAB_ECHO_PORT"

func init() {
	if v := os.Getenv(echoEnv); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "echo: bad %s=%q\n", echoEnv, v)
			os.Exit(2)
		}
		if err := serveEcho(port); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// serveEcho answers on port over TCP and UDP, on every address of the
// namespace, until killed; it logs one line per peer, so the log shows
// which source address each connection came from.
func serveEcho(port int) error {
	addr := ":" + strconv.Itoa(port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("echo: pid %d answering on tcp and udp port %d\n", os.Getpid(), port)
	errc := make(chan error, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			fmt.Printf("tcp from %s\n", c.RemoteAddr())
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				errc <- err
				return
			}
			fmt.Printf("udp from %s\n", from)
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return <-errc
}

// startEcho runs p's echo responder in p's namespace and waits until it
// answers there over TCP and UDP.
func (l *Lab) startEcho(ctx context.Context, p *Pod) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("pod %s: finding own executable for the echo responder: %w", p.Name, err)
	}
	dir := filepath.Join(l.Dir, p.Name)
	if p.Node != nil {
		dir = filepath.Join(l.Dir, p.Node.Name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// env execs in place, so the recorded PID is the responder's.
	pr, err := l.start(p.NS, p.Name+"-echo", dir, "env", fmt.Sprintf("%s=%d", echoEnv, EchoPort), self)
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	p.echo = pr
	return WaitFor(ctx, 30*time.Second, "the echo responder of pod "+p.Name, func() error {
		if pr.exited() {
			return Permanent(fmt.Errorf("it exited:\n%s", pr.tail(10)))
		}
		if err := Echo(ctx, p, p.IP, "tcp"); err != nil {
			return err
		}
		return Echo(ctx, p, p.IP, "udp")
	})
}

// EchoLog returns the end of p's echo responder's log: a line per TCP
// connection and UDP datagram with the source address it came from.
func (l *Lab) EchoLog(p *Pod, lines int) string {
	if p.echo == nil {
		return ""
	}
	return p.echo.tail(lines)
}

// Echo proves a round trip from inside pod from to the echo responder at
// to:EchoPort over proto ("tcp" or "udp"): what it sends comes back
// unchanged. UDP is retried a few times, since a datagram may be lost
// while neighbours are resolved; a refusal (ICMP port unreachable) is not
// retried.
func Echo(ctx context.Context, from *Pod, to netip.Addr, proto string) error {
	return EchoAt(ctx, from, netip.AddrPortFrom(to, EchoPort), proto)
}

// EchoAt is Echo to another port than the responders' own: a Service's
// port that kube-proxy translates to EchoPort.
func EchoAt(ctx context.Context, from *Pod, target netip.AddrPort, proto string) error {
	if proto != "tcp" && proto != "udp" {
		return fmt.Errorf("echo: protocol %q, want tcp or udp", proto)
	}
	fail := func(err error) error {
		return fmt.Errorf("echo over %s from pod %s (%s) to %s: %w", proto, from.Name, from.IP, target, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := nsDialer(from.NS)(ctx, proto, target.String())
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	msg := []byte(hex.EncodeToString(tok) + "\n")
	got := make([]byte, len(msg))
	if proto == "tcp" {
		if _, err := c.Write(msg); err != nil {
			return fail(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return fail(err)
		}
		if !bytes.Equal(got, msg) {
			return fail(fmt.Errorf("sent %q, got %q back", msg, got))
		}
		return nil
	}
	for attempt := 1; ; attempt++ {
		if _, err := c.Write(msg); err != nil {
			return fail(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(got)
		switch {
		case err == nil && bytes.Equal(got[:n], msg):
			return nil
		case err == nil:
			return fail(fmt.Errorf("sent %q, got %q back", msg, got[:n]))
		case errors.Is(err, syscall.ECONNREFUSED):
			return fail(err)
		case ctx.Err() != nil || attempt == 5:
			return fail(fmt.Errorf("no answer to %d datagrams: %w", attempt, err))
		}
	}
}
