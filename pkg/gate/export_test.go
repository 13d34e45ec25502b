package gate

import "time"

// SetClock has the gate read the time from now (set before Run).
func (g *Gate) SetClock(now func() time.Time) { g.now = now }
