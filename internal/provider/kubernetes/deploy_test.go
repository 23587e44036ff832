package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// TestDeployManifestsAreValid applies deploy/kubernetes to the API server
// as `kubectl apply --dry-run=server` would, with strict field
// validation: a misspelt field, a wrong type or an unknown kind fails.
func TestDeployManifestsAreValid(t *testing.T) {
	needCluster(t)
	b, err := os.ReadFile("../../../deploy/kubernetes/hodei.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cluster.REST)
	if err != nil {
		t.Fatal(err)
	}
	resources := map[string]string{"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "Role": "roles",
		"RoleBinding": "rolebindings", "Service": "services", "Deployment": "deployments", "PodDisruptionBudget": "poddisruptionbudgets"}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	kinds := map[string]int{}
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		if err != nil {
			t.Fatal(err)
		}
		res, ok := resources[u.GetKind()]
		if !ok {
			t.Fatalf("%s %s: kind not known to this test", u.GetKind(), u.GetName())
		}
		kinds[u.GetKind()]++
		ri := dyn.Resource(gv.WithResource(res))
		opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
		ctx := context.Background()
		if u.GetKind() == "Namespace" { // really created: the others are dry runs inside it
			opts.DryRun = nil
			if _, err := ri.Create(ctx, &u, opts); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
			}
			continue
		}
		if _, err := ri.Namespace(u.GetNamespace()).Create(ctx, &u, opts); err != nil {
			t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	for kind := range resources {
		if kinds[kind] == 0 {
			t.Errorf("deploy/kubernetes has no %s", kind)
		}
	}
}
