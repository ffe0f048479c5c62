package server

import "time"

// unixMs is t in Unix milliseconds, 0 for the zero time ("never").
func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
