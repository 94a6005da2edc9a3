package mc

// State is where a session is in its life. The zero value is not a state.
type State string

// The session states. pending → starting → ready → capturing → completed;
// from any non-final state to failed, cancelled or expired.
const (
	StatePending   State = "pending"
	StateStarting  State = "starting"
	StateReady     State = "ready"
	StateCapturing State = "capturing"
	StateCompleted State = "completed"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
	StateExpired   State = "expired"
)

// States lists every state in the order of a session's life.
var States = []State{StatePending, StateStarting, StateReady, StateCapturing,
	StateCompleted, StateFailed, StateCancelled, StateExpired}

// Valid reports whether s is one of the states.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Final reports whether s is a state that never changes again.
func (s State) Final() bool {
	switch s {
	case StateCompleted, StateFailed, StateCancelled, StateExpired:
		return true
	}
	return false
}

// Active reports whether a session in state s holds (or is getting) a machine.
func (s State) Active() bool { return s.Valid() && !s.Final() }

// forward is the one step each live state may take on success.
var forward = map[State]State{
	StatePending:   StateStarting,
	StateStarting:  StateReady,
	StateReady:     StateCapturing,
	StateCapturing: StateCompleted,
}

// CanTransition reports whether the state machine allows from → to.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() || from.Final() {
		return false
	}
	switch to {
	case StateFailed, StateCancelled, StateExpired:
		return true
	}
	return forward[from] == to
}
