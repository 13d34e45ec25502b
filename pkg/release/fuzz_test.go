package release

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// FuzzParseRefObjects: a user's component properties never panic the
// planner; what is accepted names every object fully.
func FuzzParseRefObjects(f *testing.F) {
	f.Add(`{"objects":[{"apiVersion":"apps/v1","kind":"Deployment","name":"demo"}]}`)
	f.Add(`{"objects":[{"resource":"configmaps","name":"c"},{"resource":"ingresses","group":"networking.k8s.io","name":"i"}]}`)
	f.Add(`{"objects":[{"apiVersion":"a/b/c","kind":"K","name":"n"}]}`)
	f.Add(`{"objects":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, props string) {
		refs, err := ParseRefObjects("c", &runtime.RawExtension{Raw: []byte(props)})
		if err != nil {
			if _, ok := problem.As(err); !ok {
				t.Fatalf("error is not a problem: %v", err)
			}
			return
		}
		for _, r := range refs {
			if r.Name == "" || (r.Kind == "") == (r.Resource == "") || (r.Kind != "" && r.APIVersion == "") {
				t.Fatalf("accepted incomplete reference %+v", r)
			}
		}
	})
}
