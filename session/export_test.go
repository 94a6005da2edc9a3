package session

// Halt stops the manager as a crash would: its goroutines end, and nothing
// is written to the store (no end, no stopping mark) and no machine is
// destroyed.
func (m *Manager) Halt() {
	m.handover.Store(true)
	m.replicaOn.Store(false)
	m.stop()
	m.wg.Wait()
}

// Stopped is closed once Close (or Halt) has told every goroutine of the
// manager to stop.
func (m *Manager) Stopped() <-chan struct{} { return m.life.Done() }
