package allocator

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Family is an IP address family.
type Family int

// The address families, numbered as in their names.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return "family(" + strconv.Itoa(int(f)) + ")"
}

// FamilyOf returns the family of a.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Port is one port a Service exposes. Two Services sharing an address
// must not expose the same Port.
type Port struct {
	Protocol string // TCP, UDP or SCTP, as in the Service
	Port     int32
}

// String returns the port as "TCP/80".
func (p Port) String() string {
	return p.Protocol + "/" + strconv.Itoa(int(p.Port))
}

// Request is what a Service asks for.
type Request struct {
	// Families lists the families the Service wants, primary first. It
	// gets one address per family.
	Families []Family
	// Pool, when set, is the only pool to allocate from. Naming a pool is
	// how a Service reaches a pool whose auto-assign is off.
	Pool string
	// Addrs are requested addresses, at most one per family. When set,
	// there must be one for each of Families.
	Addrs []netip.Addr
	// Ports are the ports the Service exposes.
	Ports []Port
	// SharingKey lets Services with the same key share an address; empty
	// forbids sharing.
	SharingKey string
	// BackendKey names the pods behind the Service when they restrict
	// where its addresses can be announced (externalTrafficPolicy
	// Local); empty when any node can announce them. Only Services with
	// the same BackendKey share an address.
	BackendKey string
}

// validate checks the parts of r that do not depend on the pools.
func (r Request) validate() error {
	if len(r.Families) == 0 {
		return &Error{Reason: ReasonInvalidRequest, Msg: "no IP family requested"}
	}
	seen := map[Family]bool{}
	for _, f := range r.Families {
		if f != IPv4 && f != IPv6 {
			return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("unknown IP family %d", int(f))}
		}
		if seen[f] {
			return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("IP family %s requested twice", f)}
		}
		seen[f] = true
	}
	if len(r.Addrs) == 0 {
		return nil
	}
	got := map[Family]netip.Addr{}
	for _, a := range r.Addrs {
		f := FamilyOf(a)
		if prev, ok := got[f]; ok {
			return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("requested addresses %s and %s are both %s: at most one per family", prev, a, f)}
		}
		if !seen[f] {
			return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("requested address %s is %s, but the Service's IP families are %s", a, f, familyList(r.Families))}
		}
		got[f] = a
	}
	if len(got) != len(r.Families) {
		return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("requested addresses %s do not cover the Service's IP families %s", addrList(r.Addrs), familyList(r.Families))}
	}
	return nil
}

// addrFor returns the requested address of family f.
func (r Request) addrFor(f Family) (netip.Addr, bool) {
	for _, a := range r.Addrs {
		if FamilyOf(a) == f {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Assignment is what a Service holds.
type Assignment struct {
	// Addrs holds one address per family, in the order of the request.
	Addrs []netip.Addr
	// Pool is the pool the addresses belong to. For an orphaned
	// assignment it is the pool they last belonged to, or empty when
	// that is unknown (read back after a restart).
	Pool string
	// Orphaned is true when no configured pool holds the addresses any
	// more. The Service keeps them until it goes.
	Orphaned bool
}

// Holding is an assignment found in the cluster, e.g. in the status of a
// Service, to be taken over by the allocator.
type Holding struct {
	Service string
	// Created decides who keeps an address that two Services hold
	// without being allowed to share it: the older one.
	Created time.Time
	Addrs   []netip.Addr
	// Request gives the ports and sharing keys of the Service.
	Request Request
}

// Conflict reports an address a Service held but lost to an older one.
type Conflict struct {
	Service string
	Addr    netip.Addr
	// Holder is the Service that keeps Addr.
	Holder string
	// Err says why the two cannot share Addr.
	Err error
}

func familyList(fs []Family) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = f.String()
	}
	return strings.Join(s, ",")
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
