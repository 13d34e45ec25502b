// Package admission holds the hub's admission policies that Flotilla's
// trust rests on, and installs them: today, that a resume request on an
// Application's status names the identity that wrote it.
package admission

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// Name is the policy's (and its binding's) name.
const Name = "flotilla-resume-identity"

//go:embed resume-identity.yaml
var resumeIdentity []byte

// Objects returns the policy and its binding, decoded.
func Objects() (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(resumeIdentity)))
	policy := &admissionv1.ValidatingAdmissionPolicy{}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{}
	for _, into := range []any{policy, binding} {
		doc, err := r.Read()
		if err != nil {
			return nil, nil, fmt.Errorf("read resume-identity.yaml: %w", err)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return nil, nil, fmt.Errorf("decode resume-identity.yaml: %w", err)
		}
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("resume-identity.yaml holds more than a policy and its binding")
	}
	return policy, binding, nil
}

// Install creates or updates the policies on the hub at cfg.
func Install(ctx context.Context, cfg *rest.Config) error {
	policy, binding, err := Objects()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("install admission policies: %w", err)
	}
	ar := cs.AdmissionregistrationV1()
	if err := upsert(ctx, ar.ValidatingAdmissionPolicies(), policy); err != nil {
		return fmt.Errorf("install ValidatingAdmissionPolicy %s: %w", policy.Name, err)
	}
	if err := upsert(ctx, ar.ValidatingAdmissionPolicyBindings(), binding); err != nil {
		return fmt.Errorf("install ValidatingAdmissionPolicyBinding %s: %w", binding.Name, err)
	}
	return nil
}

// client is what upsert needs of a typed cluster-scoped client.
type client[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

func upsert[T metav1.Object](ctx context.Context, c client[T], obj T) error {
	old, err := c.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, obj, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	obj.SetResourceVersion(old.GetResourceVersion())
	_, err = c.Update(ctx, obj, metav1.UpdateOptions{})
	return err
}
