package charttest

import (
	"fmt"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"
)

// cluster is a fake cluster for the chart's lookup: Secrets only, the one
// kind the chart looks up.
type cluster struct {
	client *dynamicfake.FakeDynamicClient
}

func newCluster(t *testing.T, secrets ...*corev1.Secret) cluster {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	objs := make([]runtime.Object, len(secrets))
	for i, s := range secrets {
		objs[i] = s
	}
	return cluster{dynamicfake.NewSimpleDynamicClient(scheme, objs...)}
}

func (c cluster) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	if apiVersion != "v1" || kind != "Secret" {
		return nil, false, fmt.Errorf("the chart looks up %s %s, which the fake cluster does not serve", apiVersion, kind)
	}
	return c.client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}), true, nil
}

// renderIn renders the chart as helm install/upgrade does against c (the
// engine with lookup) and returns the objects.
func renderIn(t *testing.T, c cluster, values string) objects {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal([]byte(values), &vals); err != nil {
		t.Fatal(err)
	}
	rv, err := chartutil.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: "r", Namespace: "shroud", IsUpgrade: true, Revision: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.RenderWithClientProvider(chrt, rv, c)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var all strings.Builder
	for f, body := range files {
		if strings.HasSuffix(f, ".yaml") {
			all.WriteString("---\n" + body + "\n")
		}
	}
	return decodeAll(t, all.String())
}

// The generated identity is kept across upgrades: the second render
// reads the Secret the first one made back (lookup) and renders the same
// key; a render into a cluster without it (the control) makes a new one.
// Likewise the admin token.
func TestGeneratedIdentityStaysAcrossUpgrades(t *testing.T) {
	values := "admin: {enabled: true}\n"
	first := renderIn(t, newCluster(t), values)
	id := get[*corev1.Secret](t, first, "Secret", "r-shroud-identity")
	admin := get[*corev1.Secret](t, first, "Secret", "r-shroud-admin")
	installed := func(s *corev1.Secret) *corev1.Secret {
		s = s.DeepCopy()
		s.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
		s.Namespace = "shroud"
		return s
	}
	upgrade := renderIn(t, newCluster(t, installed(id), installed(admin)), values)
	if got := get[*corev1.Secret](t, upgrade, "Secret", "r-shroud-identity").Data["identity.pem"]; string(got) != string(id.Data["identity.pem"]) {
		t.Error("an upgrade rendered a new identity: every image encrypted before would be lost to the pods")
	}
	if got := get[*corev1.Secret](t, upgrade, "Secret", "r-shroud-admin").Data["token"]; string(got) != string(admin.Data["token"]) {
		t.Error("an upgrade rendered a new admin token")
	}
	other := renderIn(t, newCluster(t), values)
	if string(get[*corev1.Secret](t, other, "Secret", "r-shroud-identity").Data["identity.pem"]) == string(id.Data["identity.pem"]) {
		t.Error("two installs into empty clusters rendered the same identity: the key is not generated")
	}
}
