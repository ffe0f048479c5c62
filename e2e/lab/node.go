package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// NodeExec runs a command inside n's network namespace, as an operator on
// the node would.
func (l *Lab) NodeExec(ctx context.Context, n *Node, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%v on %s: %w: %s", args, n.Name, err, out)
	}
	return out, nil
}

// KillAgent kills n's agent with SIGKILL, as a crash or an OOM kill would,
// and waits for it to be gone. Its routes stay in the kernel.
func (l *Lab) KillAgent(n *Node) error {
	p := n.agent
	if p == nil {
		return fmt.Errorf("no agent started on %s", n.Name)
	}
	pid := p.cmd.Process.Pid
	if err := p.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("killing the agent on %s: %w", n.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("the agent on %s did not die within 10s of SIGKILL", n.Name)
	}
	l.res.removePID(pid)
	return nil
}

// Background is a command running in a namespace of the lab, recorded so
// that teardown stops it even if the test does not.
type Background struct {
	l    *Lab
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (b *Background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.Write(p)
}

// Output is what the command wrote so far, stdout and stderr.
func (b *Background) Output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// StartBackground starts args inside network namespace ns.
func (l *Lab) StartBackground(ns string, args ...string) (*Background, error) {
	b := &Background{l: l, done: make(chan struct{})}
	b.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	b.cmd.Stdout, b.cmd.Stderr = b, b
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %v in %s: %w", args, ns, err)
	}
	if err := l.res.addPID(b.cmd.Process.Pid); err != nil {
		_ = b.cmd.Process.Kill()
		return nil, err
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	return b, nil
}

// Stop interrupts the command (ping prints its summary on SIGINT), waits
// for it, and returns its output.
func (b *Background) Stop() string {
	_ = b.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	b.l.res.removePID(b.cmd.Process.Pid)
	return b.Output()
}

// VTYArgs runs vtysh on r with the given arguments (several -c commands
// form one session, as configuration needs).
func (r *Router) VTYArgs(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "vtysh", append([]string{"--vty_socket", r.VTYDir}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vtysh %v on %s: %w: %s", args, r.Name, err, out)
	}
	return nil
}

// EchoTransfer sends count writes of size bytes over TCP from pod from to
// the echo responder at to, reading everything back as it goes, and checks
// it came back unchanged: a bulk transfer of full-size segments (one write
// of 1400 bytes is one segment of 1400 bytes of payload), as opposed to
// Echo's one short line. It returns the bytes moved each way.
func EchoTransfer(ctx context.Context, from *Pod, to netip.Addr, count, size int) (int, error) {
	target := netip.AddrPortFrom(to, EchoPort)
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("transfer from pod %s (%s) to %s: %w", from.Name, from.IP, target, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := nsDialer(from.NS)(ctx, "tcp", target.String())
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	// Read concurrently, so a full receive window never stalls the writer.
	got := make(chan error, 1)
	sent := make([]byte, 0, count*size)
	for i := range count * size {
		sent = append(sent, byte(i*7+i/251))
	}
	go func() {
		back := make([]byte, len(sent))
		if _, err := io.ReadFull(c, back); err != nil {
			got <- err
			return
		}
		if !bytes.Equal(back, sent) {
			got <- errors.New("the data came back changed")
			return
		}
		got <- nil
	}()
	for i := range count {
		if _, err := c.Write(sent[i*size : (i+1)*size]); err != nil {
			return fail(err)
		}
	}
	if err := <-got; err != nil {
		return fail(err)
	}
	return len(sent), nil
}

// AgentCommand runs the route-agent binary under test in n's network
// namespace with args and returns what it printed, for invocations that
// end by themselves (a refusal at start-up, a subcommand).
func (l *Lab) AgentCommand(ctx context.Context, n *Node, args ...string) ([]byte, error) {
	return l.NodeExec(ctx, n, append([]string{filepath.Join(l.opts.BinDir, "route-agent")}, args...)...)
}

// PacedTransfer keeps one TCP connection from pod from to the echo
// responder at to busy for d: a 1400-byte write every 10 ms, everything
// read back and compared as it goes. It fails when the connection breaks
// or the data comes back changed, which an agent restart must not cause.
func PacedTransfer(ctx context.Context, from *Pod, to netip.Addr, d time.Duration) (int, error) {
	target := netip.AddrPortFrom(to, EchoPort)
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("paced transfer from pod %s (%s) to %s: %w", from.Name, from.IP, target, err)
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	c, err := nsDialer(from.NS)(ctx, "tcp", target.String())
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	const size = 1400
	chunk := func(i int) []byte {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i + j)
		}
		return b
	}
	writes := int(d / (10 * time.Millisecond))
	got := make(chan error, 1)
	go func() {
		back := make([]byte, size)
		for i := range writes {
			if _, err := io.ReadFull(c, back); err != nil {
				got <- fmt.Errorf("reading chunk %d of %d: %w", i+1, writes, err)
				return
			}
			if !bytes.Equal(back, chunk(i)) {
				got <- fmt.Errorf("chunk %d came back changed", i+1)
				return
			}
		}
		got <- nil
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := range writes {
		if _, err := c.Write(chunk(i)); err != nil {
			return fail(fmt.Errorf("writing chunk %d of %d: %w", i+1, writes, err))
		}
		<-tick.C
	}
	if err := <-got; err != nil {
		return fail(err)
	}
	return writes * size, nil
}

// ConnRate opens n TCP connections from pod from to the echo responder at
// to, workers at a time, each writing one byte, reading it back and
// closing, and returns how long they took: the new-connection rate a NAT
// sustains, since every connection is a new flow for it.
func ConnRate(ctx context.Context, from *Pod, to netip.Addr, n, workers int) (time.Duration, error) {
	target := netip.AddrPortFrom(to, EchoPort).String()
	dial := nsDialer(from.NS)
	jobs := make(chan int)
	errs := make(chan error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range jobs {
				if err := func() error {
					ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					c, err := dial(ctx, "tcp", target)
					if err != nil {
						return err
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					b := []byte{'x'}
					if _, err := c.Write(b); err != nil {
						return err
					}
					_, err = io.ReadFull(c, b)
					return err
				}(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case jobs <- i:
		case err = <-errs:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err == nil {
		err = <-errs
	}
	if err != nil {
		return 0, fmt.Errorf("connections from pod %s to %s: %w", from.Name, target, err)
	}
	return time.Since(start), nil
}
