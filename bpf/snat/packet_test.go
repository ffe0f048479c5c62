package snat

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// This file builds test packets and checks them with its own checksum
// code, written from the RFCs rather than shared with the datapath.

const (
	ipHdrLen  = 20
	ethHdrLen = 14
)

// pkt describes an IPv4 packet. For ICMP echo the source port is the
// identifier. quote, for ICMP errors, is the IP packet the error is about.
type pkt struct {
	proto    Proto
	src, dst netip.AddrPort
	icmpType uint8
	icmpCode uint8
	quote    []byte
	// noUDPCsum sends UDP with a zero ("none") checksum.
	noUDPCsum bool
	tcpFlags  uint8
	payload   []byte
}

// csum is the Internet checksum (RFC 1071) of b, folded, not inverted.
func csum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum
}

func pseudo(src, dst netip.Addr, proto Proto, l4len int) uint32 {
	s, d := src.As4(), dst.As4()
	var b [12]byte
	copy(b[0:], s[:])
	copy(b[4:], d[:])
	b[9] = byte(proto)
	binary.BigEndian.PutUint16(b[10:], uint16(l4len))
	return csum(0, b[:])
}

// ip returns the IP packet without an Ethernet header.
func (p pkt) ip() []byte {
	var l4 []byte
	switch p.proto {
	case ProtoTCP:
		l4 = make([]byte, 20+len(p.payload))
		binary.BigEndian.PutUint16(l4[0:], p.src.Port())
		binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 1000)
		l4[12] = 5 << 4
		l4[13] = p.tcpFlags
		if l4[13] == 0 {
			l4[13] = 0x10 // ACK
		}
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], p.payload)
		binary.BigEndian.PutUint16(l4[16:], ^uint16(csum(pseudo(p.src.Addr(), p.dst.Addr(), p.proto, len(l4)), l4)))
	case ProtoUDP:
		l4 = make([]byte, 8+len(p.payload))
		binary.BigEndian.PutUint16(l4[0:], p.src.Port())
		binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], p.payload)
		if !p.noUDPCsum {
			c := ^uint16(csum(pseudo(p.src.Addr(), p.dst.Addr(), p.proto, len(l4)), l4))
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(l4[6:], c)
		}
	case ProtoICMP:
		l4 = make([]byte, 8+len(p.quote)+len(p.payload))
		l4[0], l4[1] = p.icmpType, p.icmpCode
		if p.icmpType == 0 || p.icmpType == 8 {
			binary.BigEndian.PutUint16(l4[4:], p.src.Port())
			binary.BigEndian.PutUint16(l4[6:], 7)
		}
		copy(l4[8:], p.quote)
		copy(l4[8+len(p.quote):], p.payload)
		binary.BigEndian.PutUint16(l4[2:], ^uint16(csum(0, l4)))
	}
	b := make([]byte, ipHdrLen+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	b[6] = 0x40 // DF
	b[8] = 64
	b[9] = byte(p.proto)
	s, d := p.src.Addr().As4(), p.dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], ^uint16(csum(0, b[:ipHdrLen])))
	copy(b[ipHdrLen:], l4)
	return b
}

// frame returns the packet as a TC program sees it: from the Ethernet header.
func (p pkt) frame() []byte { return ethernet(p.ip()) }

func ethernet(ip []byte) []byte {
	b := make([]byte, ethHdrLen+len(ip))
	copy(b[0:], []byte{0x02, 0, 0, 0, 0, 2})
	copy(b[6:], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	copy(b[ethHdrLen:], ip)
	return b
}

// parsed is what the checker read from a packet.
type parsed struct {
	proto    Proto
	src, dst netip.AddrPort
	icmpType uint8
	l4csum   uint16
	// inner is the quoted packet of an ICMP error.
	inner *parsed
}

// parseIP checks every checksum of an IP packet and returns its fields.
// An ICMP error's quote is checked the same way when it is complete;
// when it is cut short only its IP header checksum can be.
func parseIP(b []byte, quoted bool) (parsed, error) {
	var p parsed
	if len(b) < ipHdrLen || b[0]>>4 != 4 {
		return p, fmt.Errorf("not an IPv4 packet")
	}
	ihl := int(b[0]&0xf) * 4
	if csum(0, b[:ihl]) != 0xffff {
		return p, fmt.Errorf("bad IP header checksum %#04x", binary.BigEndian.Uint16(b[10:]))
	}
	total := int(binary.BigEndian.Uint16(b[2:]))
	complete := total <= len(b)
	if !quoted && !complete {
		return p, fmt.Errorf("IP total length %d, have %d bytes", total, len(b))
	}
	if complete {
		b = b[:total]
	}
	p.proto = Proto(b[9])
	src, _ := netip.AddrFromSlice(b[12:16])
	dst, _ := netip.AddrFromSlice(b[16:20])
	l4 := b[ihl:]
	var sport, dport uint16
	switch p.proto {
	case ProtoTCP, ProtoUDP:
		if len(l4) < 8 {
			return p, fmt.Errorf("short L4 header")
		}
		sport, dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		off := 6
		if p.proto == ProtoTCP {
			off = 16
		}
		if len(l4) >= off+2 {
			p.l4csum = binary.BigEndian.Uint16(l4[off:])
		}
		if complete && !(p.proto == ProtoUDP && p.l4csum == 0) {
			if csum(pseudo(src, dst, p.proto, len(l4)), l4) != 0xffff {
				return p, fmt.Errorf("bad %s checksum %#04x", p.proto, p.l4csum)
			}
		}
	case ProtoICMP:
		if len(l4) < 8 {
			return p, fmt.Errorf("short ICMP header")
		}
		p.icmpType = l4[0]
		p.l4csum = binary.BigEndian.Uint16(l4[2:])
		if complete && csum(0, l4) != 0xffff {
			return p, fmt.Errorf("bad ICMP checksum %#04x", p.l4csum)
		}
		switch p.icmpType {
		case 0, 8:
			sport = binary.BigEndian.Uint16(l4[4:])
		case 3, 11, 12:
			if quoted {
				return p, fmt.Errorf("ICMP error quoting an ICMP error")
			}
			in, err := parseIP(l4[8:], true)
			if err != nil {
				return p, fmt.Errorf("quoted packet: %w", err)
			}
			p.inner = &in
		}
	}
	p.src, p.dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return p, nil
}

func mustParse(t testing.TB, frame []byte) parsed {
	t.Helper()
	if len(frame) < ethHdrLen {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	p, err := parseIP(frame[ethHdrLen:], false)
	if err != nil {
		t.Fatalf("checking the packet: %v", err)
	}
	return p
}

// TestChecksumChecker makes sure the checker itself notices damage, so
// that the datapath tests relying on it can fail.
func TestChecksumChecker(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.244.1.5:40000"), netip.MustParseAddrPort("203.0.113.7:53")
	for _, p := range []pkt{
		{proto: ProtoTCP, src: src, dst: dst, payload: []byte("hello")},
		{proto: ProtoUDP, src: src, dst: dst, payload: []byte("hello")},
		{proto: ProtoICMP, src: src, dst: dst, icmpType: 8, payload: []byte("hello")},
	} {
		b := p.ip()
		if _, err := parseIP(b, false); err != nil {
			t.Fatalf("%s: good packet rejected: %v", p.proto, err)
		}
		for _, off := range []int{13, 23, len(b) - 1} {
			bad := append([]byte(nil), b...)
			bad[off] ^= 0x40
			if _, err := parseIP(bad, false); err == nil {
				t.Errorf("%s: flipping a bit at byte %d went unnoticed", p.proto, off)
			}
		}
	}
}
