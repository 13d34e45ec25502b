package liveread

import "testing"

// One person's reads beyond perPerson wait their turn; others' do not.
func TestInFlightBoundsEachPerson(t *testing.T) {
	f := &inFlight{n: map[string]int{}}
	var releases []func()
	for i := range perPerson {
		release, ok := f.take("mallory")
		if !ok {
			t.Fatalf("read %d refused", i+1)
		}
		releases = append(releases, release)
	}
	if _, ok := f.take("mallory"); ok {
		t.Fatalf("read %d taken: want at most %d at once", perPerson+1, perPerson)
	}
	if release, ok := f.take("alice"); !ok {
		t.Fatal("mallory's reads held up alice's")
	} else {
		release()
	}
	releases[0]()
	if _, ok := f.take("mallory"); !ok {
		t.Fatal("a read refused after one ended")
	}
	for _, r := range releases[1:] {
		r()
	}
	if f.n["mallory"] != 1 || len(f.n) != 1 {
		t.Errorf("counts left %v, want mallory 1", f.n)
	}
}
