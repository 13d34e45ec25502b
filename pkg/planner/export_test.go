package planner

// SetAfterPublish has p run f between publishing a change's events and
// saving it, as a crash there would (an error abandons the save).
func SetAfterPublish(p *Planner, f func() error) { p.afterPublish = f }
