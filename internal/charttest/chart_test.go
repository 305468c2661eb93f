package charttest

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/shroud-oci/shroud/config"
)

// The value sets a reviewer would try: what a user installs for each
// way shroud runs.
var valueSets = map[string]string{
	"defaults": ``,
	"replicas with redis": `
replicaCount: 2
upstream: https://registry.example.com
shared:
  addrs: ["valkey.shroud.svc:6379"]
  existingSecret: valkey-auth
`,
	"tls from a secret": `
upstream: https://registry.example.com
tls:
  enabled: true
  existingSecret: shroud-tls
`,
	"tls from cert-manager behind an ingress": `
upstream: https://registry.example.com
tls:
  enabled: true
  certManager:
    enabled: true
    issuerRef: {name: letsencrypt, kind: ClusterIssuer}
ingress:
  enabled: true
  className: nginx
  host: registry.example.com
  tls: {enabled: true}
`,
	"mirror with its own credentials": `
upstream: https://registry.example.com
upstreams:
  docker.io: https://hub-mirror.example.com
upstreamAuth:
  dockerconfigjson: '{"auths":{"registry.example.com":{"auth":"c2hyb3VkOnMzY3JldA=="}}}'
service:
  clusterIP: 10.96.0.50
containerdHosts:
  enabled: true
  origins:
    registry.example.com: https://registry.example.com
    docker.io: https://registry-1.docker.io
`,
	"edge with everything": `
replicaCount: 3
upstream: https://registry.internal
upstreamCA: {existingSecret: internal-ca}
identity: {existingSecret: shroud-identity, previousSecrets: [shroud-identity-2025]}
publicKeys:
  ops.pem: |
    -----BEGIN PUBLIC KEY-----
    MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
    -----END PUBLIC KEY-----
recipients: ["jwe:/etc/shroud/public-keys/ops.pem"]
decryptionKeys: {existingSecret: legacy-keys, keys: [legacy.pem]}
policy:
  - repositories: "team-a/**"
    action: encrypt
    pull: ["group:team-a"]
    push: ["user:ci"]
  - repositories: "public/**"
    action: passthrough
    pull: ["anonymous"]
auth:
  htpasswd:
    content: "ci:$2y$05$c2hyb3VkLXRlc3QtaHRwYXNzd2QuLi4uLi4uLi4uLi4uLi4u"
  challenge: basic
tls: {enabled: true, existingSecret: shroud-tls}
shared:
  addrs: ["valkey-0:6379", "valkey-1:6379"]
  existingSecret: valkey-auth
  tls: true
admin: {enabled: true, accessRequests: true}
autoscaling: {enabled: true, minReplicas: 3, maxReplicas: 9}
metrics:
  serviceMonitor: {enabled: true, labels: {release: prometheus}}
tracing: {enabled: true, sampleRatio: 0.1, otlpEndpoint: "http://otel-collector:4318"}
networkPolicy:
  enabled: true
  ingressFrom:
    - ipBlock: {cidr: 10.0.0.0/16}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ci}}
  metricsFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
  egress:
    upstream: [{ipBlock: {cidr: 10.20.0.0/24}}]
    shared: [{podSelector: {matchLabels: {app.kubernetes.io/name: valkey}}}]
persistence: {enabled: true, size: 20Gi}
config:
  audit-log: "-"
`,
}

// Every value set lints and renders objects that decode strictly.
func TestEveryValueSetLintsAndDecodesStrictly(t *testing.T) {
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			lint(t, values)
			objs := template(t, values)
			get[*appsv1.Deployment](t, objs, "Deployment", "r-shroud")
			get[*corev1.Service](t, objs, "Service", "r-shroud")
		})
	}
}

// The config file the chart renders is one shroud loads (unknown keys
// are an error there) and accepts, with the files it names mounted.
func TestRenderedConfigLoadsInShroud(t *testing.T) {
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			objs := template(t, values)
			cm := get[*corev1.ConfigMap](t, objs, "ConfigMap", "r-shroud")
			f := filepath.Join(t.TempDir(), "shroud.yaml")
			if err := os.WriteFile(f, []byte(cm.Data["shroud.yaml"]), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(f)
			if err != nil {
				t.Fatalf("shroud does not load the rendered config: %v\n%s", err, cm.Data["shroud.yaml"])
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("shroud refuses the rendered config: %v\n%s", err, cm.Data["shroud.yaml"])
			}
			// Every file the config names is mounted into the container.
			d := get[*appsv1.Deployment](t, objs, "Deployment", "r-shroud")
			c := d.Spec.Template.Spec.Containers[0]
			files := []string{cfg.Identity, cfg.TLSCert, cfg.TLSKey, cfg.UpstreamCA, cfg.UpstreamAuthFile, cfg.Auth.Htpasswd, cfg.Auth.ClientCA, cfg.Shared.PasswordFile, cfg.Admin.TokenFile}
			files = append(append(files, cfg.PreviousIdentities...), cfg.DecryptionKeys...)
			for _, r := range cfg.Recipients {
				if _, file, ok := strings.Cut(r, ":"); ok && strings.HasPrefix(file, "/") {
					files = append(files, file)
				}
			}
			for _, file := range files {
				if file != "" && !mounted(c, file) {
					t.Errorf("the config names %s, which no volume mount holds (%v)", file, c.VolumeMounts)
				}
			}
		})
	}
}

func mounted(c corev1.Container, file string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
	})
}

// What a reviewer checks of the pod: non-root, read-only root, no
// capabilities, no escalation, seccomp; probes on /healthz and /readyz;
// a grace period above the drain; Secrets not readable by every user.
func TestPodIsLockedDownProbedAndDrained(t *testing.T) {
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			objs := template(t, values)
			d := get[*appsv1.Deployment](t, objs, "Deployment", "r-shroud")
			ps := d.Spec.Template.Spec
			if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot ||
				ps.SecurityContext.SeccompProfile == nil || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v", ps.SecurityContext)
			}
			if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
				t.Error("the pod mounts a service account token it does not need")
			}
			if len(ps.Containers) != 1 {
				t.Fatalf("%d containers", len(ps.Containers))
			}
			c := ps.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("container securityContext %+v", sc)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.String() != "registry" {
				t.Errorf("liveness probe %+v; want GET /healthz on the registry port", c.LivenessProbe)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.String() != "registry" {
				t.Errorf("readiness probe %+v; want GET /readyz on the registry port", c.ReadinessProbe)
			}
			cm := get[*corev1.ConfigMap](t, objs, "ConfigMap", "r-shroud")
			cfg := loadConfig(t, cm)
			if wantTLS := cfg.TLSCert != ""; (c.ReadinessProbe.HTTPGet.Scheme == corev1.URISchemeHTTPS) != wantTLS || (c.LivenessProbe.HTTPGet.Scheme == corev1.URISchemeHTTPS) != wantTLS {
				t.Errorf("probes speak %s with tls %v", c.ReadinessProbe.HTTPGet.Scheme, wantTLS)
			}
			var preStop time.Duration
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
				preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			}
			if preStop == 0 {
				t.Error("no preStop: the SIGTERM comes while the Service still sends traffic")
			}
			grace := time.Duration(*ps.TerminationGracePeriodSeconds) * time.Second
			if grace <= preStop+cfg.DrainDelay+cfg.DrainTimeout {
				t.Errorf("terminationGracePeriodSeconds %s; want above preStop %s + drain-delay %s + drain-timeout %s", grace, preStop, cfg.DrainDelay, cfg.DrainTimeout)
			}
			for _, v := range ps.Volumes {
				if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0) {
					t.Errorf("secret volume %s is readable by every user (mode %v)", v.Name, v.Secret.DefaultMode)
				}
			}
			writable := map[string]bool{}
			for _, m := range c.VolumeMounts {
				if !m.ReadOnly {
					writable[m.MountPath] = true
				}
			}
			if !writable["/var/lib/shroud"] || !writable["/tmp"] || len(writable) != 2 {
				t.Errorf("writable mounts %v; want the data dir and /tmp only", writable)
			}
		})
	}
}

func loadConfig(t *testing.T, cm *corev1.ConfigMap) config.Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "shroud.yaml")
	if err := os.WriteFile(f, []byte(cm.Data["shroud.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// No key, password or token reaches a ConfigMap: each comes from a
// Secret, as a file.
func TestNoSecretInAnyConfigMap(t *testing.T) {
	secrets := []string{"PRIVATE KEY", "$2y$05$", "c2hyb3VkOnMzY3JldA", "s3cret"}
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			for key, o := range template(t, values) {
				cm, ok := o.(*corev1.ConfigMap)
				if !ok {
					continue
				}
				for file, data := range cm.Data {
					for _, s := range secrets {
						if strings.Contains(data, s) {
							t.Errorf("%s %s holds %q", key, file, s)
						}
					}
				}
			}
		})
	}
}

// A change of config rolls the pods; the same values do not.
func TestConfigChecksumRollsThePods(t *testing.T) {
	sum := func(values string) string {
		d := get[*appsv1.Deployment](t, template(t, values), "Deployment", "r-shroud")
		return d.Spec.Template.Annotations["checksum/config"]
	}
	a, b, c := sum("logLevel: info\n"), sum("logLevel: info\n"), sum("logLevel: debug\n")
	if a == "" || a != b {
		t.Errorf("the same values give checksums %q and %q", a, b)
	}
	if a == c {
		t.Errorf("logLevel info and debug give the same checksum %q: a config change would not roll the pods", a)
	}
}

// Several replicas need the shared tier: without it the chart refuses to
// render, saying why; with it PDB (and with autoscaling the HPA) come.
func TestReplicasNeedTheSharedTier(t *testing.T) {
	for _, values := range []string{
		"replicaCount: 2\nupstream: https://registry.example.com\n",
		"autoscaling: {enabled: true}\nupstream: https://registry.example.com\n",
	} {
		out, err := templateErr(t, values)
		if err == nil || !strings.Contains(out, "needs the shared tier: set shared.addrs") {
			t.Errorf("%q rendered (%v):\n%.400s", values, err, out)
		}
	}
	one := template(t, "")
	if one.has("PodDisruptionBudget") || one.has("HorizontalPodAutoscaler") {
		t.Errorf("one replica renders %v", one.keys())
	}
	two := template(t, valueSets["replicas with redis"])
	if !two.has("PodDisruptionBudget") || two.has("HorizontalPodAutoscaler") {
		t.Errorf("two replicas without autoscaling render %v", two.keys())
	}
	auto := template(t, valueSets["edge with everything"])
	if !auto.has("HorizontalPodAutoscaler") || !auto.has("PodDisruptionBudget") {
		t.Errorf("autoscaling renders %v", auto.keys())
	}
	if d := get[*appsv1.Deployment](t, auto, "Deployment", "r-shroud"); d.Spec.Replicas != nil {
		t.Errorf("with an HPA the Deployment sets replicas %d, which every upgrade would reset", *d.Spec.Replicas)
	}
}

// A misspelt value fails at install, naming it: values.schema.json.
func TestSchemaRefusesTypos(t *testing.T) {
	for values, want := range map[string]string{
		"replicaCont: 2\n":                      "replicaCont",
		"shared:\n  adress: valkey:6379\n":      "adress",
		"logFormat: xml\n":                      "logFormat",
		"tls:\n  enabeld: true\n":               "enabeld",
		"upstream: registry.example.com\n":      "upstream",
		"drainTimeout: 30 seconds\n":            "drainTimeout",
		"networkPolicy:\n  ingresFrom: []\n":    "ingresFrom",
		"recipients: [\"rsa:/etc/key.pem\"]\n":  "recipients",
		"containerdHosts:\n  origin: {a: b}\n":  "origin",
		"image:\n  digest: sha256:abc\n":        "digest",
		"admin:\n  enabled: yes-please\n":       "enabled",
		"service:\n  port: 70000\n":             "port",
		"shared:\n  addrs: [\"redis://x:1\"]\n": "addrs",
	} {
		out, err := templateErr(t, values)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("%q: %v; want it refused naming %s:\n%.300s", values, err, want, out)
		}
	}
}

// TLS from cert-manager: a Certificate for the Service's names and the
// ingress host, into the Secret the pod mounts; from an existing Secret,
// no Certificate.
func TestTLSSources(t *testing.T) {
	objs := template(t, valueSets["tls from cert-manager behind an ingress"])
	cert := get[*certificate](t, objs, "Certificate", "r-shroud")
	if !slices.Contains(cert.Spec.DNSNames, "registry.example.com") || !slices.Contains(cert.Spec.DNSNames, "r-shroud.shroud.svc.cluster.local") {
		t.Errorf("certificate names %v", cert.Spec.DNSNames)
	}
	if cert.Spec.IssuerRef.Name != "letsencrypt" || cert.Spec.IssuerRef.Kind != "ClusterIssuer" {
		t.Errorf("issuer %+v", cert.Spec.IssuerRef)
	}
	d := get[*appsv1.Deployment](t, objs, "Deployment", "r-shroud")
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == cert.Spec.SecretName
	}) {
		t.Errorf("the pod does not mount the Certificate's Secret %s", cert.Spec.SecretName)
	}
	own := template(t, valueSets["tls from a secret"])
	if own.has("Certificate") {
		t.Error("TLS from an existing Secret renders a Certificate")
	}
	d = get[*appsv1.Deployment](t, own, "Deployment", "r-shroud")
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "shroud-tls"
	}) {
		t.Error("the pod does not mount tls.existingSecret")
	}
	if out, err := templateErr(t, "tls: {enabled: true}\n"); err == nil || !strings.Contains(out, "tls.existingSecret") {
		t.Errorf("tls without a certificate source rendered: %v %.300s", err, out)
	}
}

// The mirror: the upstream credentials in a dockerconfigjson Secret the
// config names; hosts.toml for each origin, naming the Service's fixed
// address.
func TestMirrorWithOwnCredentialsAndHostsToml(t *testing.T) {
	objs := template(t, valueSets["mirror with its own credentials"])
	s := get[*corev1.Secret](t, objs, "Secret", "r-shroud-upstream-auth")
	if s.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(string(s.Data[".dockerconfigjson"]), "registry.example.com") {
		t.Errorf("upstream auth Secret %s %q", s.Type, s.Data)
	}
	cfg := loadConfig(t, get[*corev1.ConfigMap](t, objs, "ConfigMap", "r-shroud"))
	if cfg.UpstreamAuthFile != "/etc/shroud/upstream-auth/.dockerconfigjson" || cfg.Upstreams["docker.io"] != "https://hub-mirror.example.com" {
		t.Errorf("config upstream-auth-file %q upstreams %v", cfg.UpstreamAuthFile, cfg.Upstreams)
	}
	hosts := get[*corev1.ConfigMap](t, objs, "ConfigMap", "r-shroud-containerd-hosts")
	h := hosts.Data["registry.example.com.hosts.toml"]
	if !strings.Contains(h, `server = "https://registry.example.com"`) || !strings.Contains(h, `[host."http://r-shroud.shroud.svc.cluster.local:5000"]`) || !strings.Contains(h, `capabilities = ["pull", "resolve"]`) {
		t.Errorf("hosts.toml:\n%s", h)
	}
	if _, ok := hosts.Data["docker.io.hosts.toml"]; !ok {
		t.Errorf("no hosts.toml for docker.io: %v", hosts.Data)
	}
	svc := get[*corev1.Service](t, objs, "Service", "r-shroud")
	if svc.Spec.ClusterIP != "10.96.0.50" {
		t.Errorf("service clusterIP %q", svc.Spec.ClusterIP)
	}
}

// The NetworkPolicy admits the peers named, and lets out DNS, the
// upstream and the shared tier only.
func TestNetworkPolicyAdmitsOnlyWhatIsNamed(t *testing.T) {
	objs := template(t, valueSets["edge with everything"])
	np := get[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "r-shroud")
	if len(np.Spec.Ingress) != 2 || len(np.Spec.Ingress[0].From) != 2 || np.Spec.Ingress[0].From[0].IPBlock == nil || np.Spec.Ingress[0].From[0].IPBlock.CIDR != "10.0.0.0/16" {
		t.Errorf("ingress %+v", np.Spec.Ingress)
	}
	if len(np.Spec.Egress) != 3 {
		t.Fatalf("egress rules %+v; want DNS, upstream, shared tier", np.Spec.Egress)
	}
	if np.Spec.Egress[1].To[0].IPBlock.CIDR != "10.20.0.0/24" || np.Spec.Egress[1].Ports[0].Port.IntValue() != 443 {
		t.Errorf("upstream egress %+v", np.Spec.Egress[1])
	}
	if np.Spec.Egress[2].Ports[0].Port.IntValue() != 6379 {
		t.Errorf("shared tier egress %+v", np.Spec.Egress[2])
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{"Ingress", "Egress"}) {
		t.Errorf("policy types %v", np.Spec.PolicyTypes)
	}
}

// The identity Secret holds an RSA private key shroud loads, and is kept
// on uninstall.
func TestGeneratedIdentityIsAKeyAndKept(t *testing.T) {
	objs := template(t, "")
	s := get[*corev1.Secret](t, objs, "Secret", "r-shroud-identity")
	if s.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("identity Secret annotations %v; want helm.sh/resource-policy: keep", s.Annotations)
	}
	b, _ := pem.Decode(s.Data["identity.pem"])
	if b == nil {
		t.Fatalf("identity.pem is no PEM: %q", s.Data["identity.pem"])
	}
	if _, err := x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
		t.Fatalf("identity.pem: %v", err)
	}
	if template(t, "identity: {existingSecret: mine}\n").has("Secret") {
		t.Error("with identity.existingSecret the chart still renders a Secret")
	}
}
