package config

import "strings"

// FieldError is one problem in the configuration. Parse returns them joined
// with errors.Join; use errors.As to get the first, or unwrap the join
// (interface{ Unwrap() []error }) to get them all.
type FieldError struct {
	// Path locates the problem, e.g. "nonMasqueradeCIDRs[1]", spelled as
	// the document spells it; empty for the top level of the document.
	Path string
	// Value is the offending value as written (a key name for unknown or
	// repeated keys), or empty when there is none.
	Value string
	// Msg is the complete description. It already quotes Value where
	// there is one, because where the value reads best differs from one
	// message to the next.
	Msg string
}

// Error renders the error as "path: msg".
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// suggest returns the candidate closest to s if it is close enough to be a
// likely typo, else "". A difference in case alone always counts, since
// the two accepted spellings of each key differ by case.
func suggest(s string, candidates []string) string {
	const maxLen = 64 // keeps the quadratic distance cheap on garbage input
	if len(s) > maxLen {
		return ""
	}
	for _, c := range candidates {
		if strings.EqualFold(s, c) {
			return c
		}
	}
	best, bestDist := "", 3 // a distance of 3 or more is not a typo
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
