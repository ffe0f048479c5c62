package allocator

import "errors"

// Reason classifies why a Service got no address.
type Reason string

// The reasons an allocation fails.
const (
	// ReasonInvalidRequest: the request contradicts itself, e.g. two
	// requested addresses of one family.
	ReasonInvalidRequest Reason = "InvalidRequest"
	// ReasonUnknownPool: the Service names a pool that is not configured.
	ReasonUnknownPool Reason = "UnknownPool"
	// ReasonNoPool: no pool that the Service may use has addresses of a
	// family it wants.
	ReasonNoPool Reason = "NoPool"
	// ReasonPoolExhausted: the pools the Service may use are full.
	ReasonPoolExhausted Reason = "PoolExhausted"
	// ReasonNotInPool: a requested address lies outside every pool, or
	// outside the pool the Service names.
	ReasonNotInPool Reason = "NotInPool"
	// ReasonAddressInUse: a requested address is held by a Service it
	// cannot be shared with.
	ReasonAddressInUse Reason = "AddressInUse"
)

// Error is an allocation failure. Msg names the pool or address at fault.
type Error struct {
	Reason Reason
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// ReasonOf returns the Reason of an *Error in err's chain, or "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
