package lab

import (
	"context"
	"errors"
	"fmt"
	"time"
)

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// Permanent marks an error that waiting will not cure.
func Permanent(err error) error { return permanentError{err} }

// WaitFor polls check every 250ms until it returns nil, returns a
// permanent error, or timeout passes; the error then names what was
// awaited and the last reason it was not there yet.
func WaitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if pe := (permanentError{}); errors.As(err, &pe) {
			return fmt.Errorf("waiting for %s: %w", what, pe.error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s waiting for %s: %w", timeout, what, err)
		case <-tick.C:
		}
	}
}
