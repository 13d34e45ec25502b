package planner

// SetAfterPublish has p run f after publishing a change's events (saved
// before them), as a crash there would.
func SetAfterPublish(p *Planner, f func() error) { p.afterPublish = f }

// SetAfterSave has p run f between saving a change and publishing its
// events, as a crash there would (an error abandons the publish).
func SetAfterSave(p *Planner, f func() error) { p.afterSave = f }
