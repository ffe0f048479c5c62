package snat

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Default map sizes.
const (
	DefaultNATEntries      = 65536
	DefaultRoutableEntries = 65536
	DefaultLocalPodEntries = 256
	DefaultNonMasqEntries  = 1024
)

// AttachMode says how programs are attached to devices.
type AttachMode int

const (
	// AttachAuto uses TCX links and falls back to tc clsact filters on
	// kernels without TCX (before 6.6).
	AttachAuto AttachMode = iota
	// AttachTCX uses TCX links only.
	AttachTCX
	// AttachTC uses tc clsact bpf filters only.
	AttachTC
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachTCX:
		return "tcx"
	case AttachTC:
		return "tc"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// Options configure Load. Zero sizes take their defaults.
type Options struct {
	// PinDir is a directory on a bpf file system where the maps and TCX
	// links are pinned, so that a restart keeps flows and attachments.
	// Empty means nothing is pinned and Close detaches everything.
	PinDir string
	// NATEntries sizes each of the forward and reverse NAT maps: the
	// number of flows tracked at once before the least recently used go.
	NATEntries int
	// RoutableEntries bounds the "do not masquerade" destination set.
	RoutableEntries int
	// LocalPodEntries bounds the local pod CIDRs.
	LocalPodEntries int
	// NonMasqEntries bounds the non-masquerade source CIDRs.
	NonMasqEntries int
	// Attach chooses between TCX and tc filters.
	Attach AttachMode
	// Logger gets the notices of Load and Attach: replaced maps, the tc
	// fallback. Nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"NATEntries", &o.NATEntries, DefaultNATEntries},
		{"RoutableEntries", &o.RoutableEntries, DefaultRoutableEntries},
		{"LocalPodEntries", &o.LocalPodEntries, DefaultLocalPodEntries},
		{"NonMasqEntries", &o.NonMasqEntries, DefaultNonMasqEntries},
	} {
		switch {
		case *f.v == 0:
			*f.v = f.def
		case *f.v < 0 || *f.v > 1<<24:
			return o, fmt.Errorf("snat options: %s %d is out of range (1 to %d)", f.name, *f.v, 1<<24)
		}
	}
	if o.Attach < AttachAuto || o.Attach > AttachTC {
		return o, fmt.Errorf("snat options: Attach %d is not a known attach mode", int(o.Attach))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, nil
}

// Datapath is the loaded SNAT programs and their maps. Its methods may
// be called from several goroutines.
type Datapath struct {
	o    Options
	log  *slog.Logger
	objs snatObjects

	mu sync.Mutex
	// links are the TCX links by attach point, pinned ones included.
	links map[attachPoint]link.Link
	// tc are the devices with the tc filters of this datapath.
	tc map[int]bool
}

// Load loads the programs and creates their maps, or reuses the pinned
// maps under o.PinDir whose type and sizes match; a pinned map that does
// not match is replaced, which loses what it held, and logged. Pinned TCX
// links are reopened but keep running the program they have until Attach
// is called for their device: by then the caller has written the
// configuration the new program expects.
func Load(o Options) (*Datapath, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("lifting the memlock limit for BPF maps: %w", err)
	}
	spec, err := loadSnat()
	if err != nil {
		return nil, err
	}
	for name, n := range map[string]int{
		snatMapSnatFwd:       o.NATEntries,
		snatMapSnatRev:       o.NATEntries,
		snatMapSnatRoutable:  o.RoutableEntries,
		snatMapSnatLocalPods: o.LocalPodEntries,
		snatMapSnatNonmasq:   o.NonMasqEntries,
	} {
		spec.Maps[name].MaxEntries = uint32(n)
	}
	d := &Datapath{o: o, log: o.Logger, links: map[attachPoint]link.Link{}, tc: map[int]bool{}}
	if o.PinDir != "" {
		if err := preparePinDir(o.PinDir); err != nil {
			return nil, err
		}
		for name, ms := range spec.Maps {
			ms.Pinning = ebpf.PinByName
			if err := d.dropIncompatible(name, ms); err != nil {
				return nil, err
			}
		}
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: o.PinDir}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading the snat programs: %+v", ve)
		}
		return nil, fmt.Errorf("loading the snat programs: %w", err)
	}
	if o.PinDir != "" {
		if err := d.openPinnedLinks(); err != nil {
			d.Close()
			return nil, err
		}
	}
	if o.Attach != AttachTCX {
		if err := d.findTCFilters(); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// dropIncompatible removes the pin of map name when the pinned map
// cannot serve spec, so that the load creates a fresh one.
func (d *Datapath) dropIncompatible(name string, spec *ebpf.MapSpec) error {
	path := filepath.Join(d.o.PinDir, name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening pinned map %s: %w", path, err)
	}
	defer m.Close()
	cerr := spec.Compatible(m)
	if cerr == nil {
		return nil
	}
	d.log.Warn("replacing pinned BPF map that does not match this version; its entries are lost",
		"map", name, "path", path, "reason", cerr)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing incompatible pinned map %s: %w", path, err)
	}
	return nil
}

// Close releases the datapath. Pinned maps and links stay, and with them
// the attachments and flows; unpinned TCX links are detached.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for ap, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the %s link: %w", ap, err))
		}
	}
	d.links = map[attachPoint]link.Link{}
	if err := d.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the snat objects: %w", err))
	}
	return errors.Join(errs...)
}

// Remove detaches every program attached from pinDir, in the calling
// thread's network namespace for tc filters, and removes the pins. It is
// for uninstalling: flows are lost. A missing pinDir is not an error.
func Remove(pinDir string) error {
	var errs []error
	if err := removeTCFilters(); err != nil {
		errs = append(errs, err)
	}
	linkDir := filepath.Join(pinDir, "links")
	entries, err := os.ReadDir(linkDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("listing pinned links in %s: %w", linkDir, err))
	}
	for _, e := range entries {
		path := filepath.Join(linkDir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("opening pinned link %s: %w", path, err))
			continue
		}
		// Unpinning drops the last reference once l is closed, which
		// detaches the program.
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpinning link %s: %w", path, err))
		}
		l.Close()
	}
	if err := os.Remove(linkDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", linkDir, err))
	}
	for _, name := range mapNames {
		path := filepath.Join(pinDir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing pinned map %s: %w", path, err))
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", pinDir, err))
	}
	return errors.Join(errs...)
}

var mapNames = []string{
	snatMapSnatConfig, snatMapSnatDevices, snatMapSnatFwd, snatMapSnatLocalPods,
	snatMapSnatNonmasq, snatMapSnatRev, snatMapSnatRoutable, snatMapSnatStats,
}
