package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// parseCommunity parses a literal community "AA:NN".
func parseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
	case 3:
		return Community{}, errors.New("large communities (A:B:C) are not supported, want AA:NN")
	default:
		return Community{}, errors.New("want AA:NN")
	}
	var halves [2]uint16
	for i, part := range parts {
		n, err := strconv.ParseUint(part, 10, 16)
		if err != nil {
			return Community{}, fmt.Errorf("%q is not a number between 0 and 65535", part)
		}
		halves[i] = uint16(n)
	}
	return Community{ASN: halves[0], Value: halves[1]}, nil
}

// isCommunityLiteral tells literals from names of bgp-communities, which may
// not contain a colon.
func isCommunityLiteral(s string) bool { return strings.Contains(s, ":") }
