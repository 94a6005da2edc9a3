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
