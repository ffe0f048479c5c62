package engine

// Trigger wakes one waiting consumer. Any number of Fire calls made while the
// consumer is busy collapse into one wake-up, so a burst of events costs one
// pass over the latest state, never a backlog.
type Trigger struct{ c chan struct{} }

// NewTrigger returns a Trigger that has not fired.
func NewTrigger() Trigger { return Trigger{c: make(chan struct{}, 1)} }

// Fire marks the trigger; it never blocks.
func (t Trigger) Fire() {
	select {
	case t.c <- struct{}{}:
	default:
	}
}

// C is readable once after one or more Fire calls.
func (t Trigger) C() <-chan struct{} { return t.c }
