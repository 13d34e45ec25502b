package dispatcher

import (
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

func TestNewerWork(t *testing.T) {
	ref := events.AppRef{UID: "u", Revision: 3, Attempt: 1}
	work := func(rev int64, attempt, index int) *events.WorkData {
		return &events.WorkData{AppRef: events.AppRef{UID: "u", Revision: rev, Attempt: attempt}, StepIndex: index}
	}
	tests := []struct {
		name  string
		have  *events.WorkData
		index int
		want  bool
	}{
		{"older revision", work(2, 5, 9), 0, false},
		{"newer revision", work(4, 0, 0), 2, true},
		{"same run, earlier step", work(3, 1, 0), 1, false},
		{"same run, same step (redelivery)", work(3, 1, 1), 1, false},
		{"same run, later step", work(3, 1, 2), 1, true},
		{"older attempt, later step", work(3, 0, 5), 0, false},
		{"newer attempt, earlier step", work(3, 2, 0), 3, true},
		{"removal", &events.WorkData{AppRef: events.AppRef{UID: "u"}, Delete: true}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.have.Supersedes(ref, tt.index); got != tt.want {
				t.Errorf("newer = %v, want %v", got, tt.want)
			}
		})
	}
}
