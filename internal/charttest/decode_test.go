package charttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// certificate is cert-manager.io/v1 Certificate as far as the chart
// writes it (cert-manager's Go module is not among this project's
// dependencies): decoded strictly, a field the chart writes that this
// does not know fails the test, so its names are checked against
// cert-manager's API reference here, once.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		DNSNames    []string `json:"dnsNames"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		Usages    []string `json:"usages"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// newObject is the Go type of an apiVersion and kind the chart renders.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "cert-manager.io/v1 Certificate":
		return &certificate{}, nil
	}
	return nil, fmt.Errorf("the chart renders %s %s, which the test has no type for", apiVersion, kind)
}

// objects are a render's objects by "Kind/name".
type objects map[string]any

// decodeAll splits helm's output into documents and decodes each
// strictly into its type: a field its type does not have (a typo, an
// indentation slip, a field of another API version) fails the test.
func decodeAll(t *testing.T, rendered string) objects {
	t.Helper()
	objs := objects{}
	r := utilyaml.NewYAMLReader(bufioReader(rendered))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("splitting the render: %v", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("a rendered document is not YAML: %v\n%s", err, doc)
		}
		obj, err := newObject(tm.APIVersion, tm.Kind)
		if err != nil {
			t.Fatalf("%v:\n%s", err, doc)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s does not decode strictly into its type: %v\n%s", tm.Kind, err, doc)
		}
		name := obj.(metav1.Object).GetName()
		key := tm.Kind + "/" + name
		if _, dup := objs[key]; dup {
			t.Fatalf("the chart renders %s twice", key)
		}
		objs[key] = obj
	}
	return objs
}

// stripComments is doc without comment lines and document separators.
func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if l := bytes.TrimSpace(l); !bytes.HasPrefix(l, []byte("#")) && !bytes.Equal(l, []byte("---")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// get returns the object of kind and name, failing the test if the
// render has none.
func get[T any](t *testing.T, objs objects, kind, name string) T {
	t.Helper()
	o, ok := objs[kind+"/"+name]
	if !ok {
		t.Fatalf("the render has no %s/%s; it has %v", kind, name, objs.keys())
	}
	v, ok := o.(T)
	if !ok {
		t.Fatalf("%s/%s is a %T", kind, name, o)
	}
	return v
}

func (o objects) keys() []string {
	var ks []string
	for k := range o {
		ks = append(ks, k)
	}
	return ks
}

// has says whether the render has an object of kind (any name).
func (o objects) has(kind string) bool {
	for k := range o {
		if len(k) > len(kind) && k[:len(kind)+1] == kind+"/" {
			return true
		}
	}
	return false
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
