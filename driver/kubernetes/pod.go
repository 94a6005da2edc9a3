package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	mc "github.com/master-controller/mc"
)

// Labels and annotations of a machine's Pod and Secret. Ids (base64url)
// may begin or end with "-" or "_", which a label value may not: labels
// hold a hash of each id (what selectors use), annotations the ids.
const (
	labelManagedBy = "app.kubernetes.io/managed-by"
	labelComponent = "app.kubernetes.io/component"
	managedBy      = "master-controller"
	component      = "machine"
	// LabelMachine is the hash of the machine id (MachineLabel).
	LabelMachine = "master-controller.dev/machine"
	// LabelSession is the hash of the session id (SessionLabel).
	LabelSession = "master-controller.dev/session"
	// LabelReplica is the creating replica's name, made a label value.
	LabelReplica   = "master-controller.dev/replica"
	annotMachineID = "master-controller.dev/machine-id"
	annotSessionID = "master-controller.dev/session-id"
	// annotPooled is "true" on a machine started for the warm pool.
	annotPooled     = "master-controller.dev/pooled"
	annotReplica    = "master-controller.dev/replica"
	annotProvider   = "master-controller.dev/provider"
	annotDestroying = "master-controller.dev/destroying"
)

// The machine's files: the agent writes the obfuscated VNC password and
// the X authority beside the password file, so both secrets are mounted
// as single files (subPath) into a writable memory emptyDir.
const (
	runDir           = "/run/mc"
	home             = "/home/mc"
	secretAgentToken = "agent-token"
	secretVNCPass    = "vnc-password"
	machineUID       = 10000 // the image's user mc (scripts/image/build.sh)
	containerName    = "machine"
)

// machineSelector selects every machine Pod of the namespace.
var machineSelector = labels.SelectorFromSet(labels.Set{labelManagedBy: managedBy, labelComponent: component}).String()

var listOne = metav1.ListOptions{LabelSelector: machineSelector, Limit: 1}

// hashOf is the first 80 bits of id's SHA-256 in hex: a valid label value
// and DNS label part.
func hashOf(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:10])
}

// PodName is the name of machine id's Pod (and of its Secret).
func PodName(id string) string { return "mc-" + hashOf(id) }

// SessionLabel is the LabelSession value of session id's machine Pod:
// kubectl get pods -l master-controller.dev/session=$(…) finds it.
func SessionLabel(id string) string { return hashOf(id) }

var notLabelChar = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// labelValue makes s a label value: invalid characters become "_", at most
// 63 characters, beginning and ending alphanumeric.
func labelValue(s string) string {
	s = notLabelChar.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	trim := func(b byte) bool { return !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9') }
	for len(s) > 0 && trim(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && trim(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func (d *Driver) labels(spec mc.MachineSpec) map[string]string {
	return map[string]string{
		labelManagedBy: managedBy, labelComponent: component,
		LabelMachine: hashOf(spec.ID), LabelSession: hashOf(spec.SessionID), LabelReplica: labelValue(d.cfg.Replica),
	}
}

func (d *Driver) annotations(spec mc.MachineSpec) map[string]string {
	a := map[string]string{annotMachineID: spec.ID, annotSessionID: spec.SessionID, annotReplica: d.cfg.Replica, annotProvider: spec.Provider}
	if spec.Pooled {
		a[annotPooled] = "true"
	}
	return a
}

// secretFor is machine spec's Secret (without its owner: the Pod does not
// exist yet).
func (d *Driver) secretFor(spec mc.MachineSpec) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: PodName(spec.ID), Namespace: d.cfg.Namespace,
			Labels: d.labels(spec), Annotations: d.annotations(spec)},
		Type:      corev1.SecretTypeOpaque,
		Immutable: new(true),
		Data: map[string][]byte{
			secretAgentToken: []byte(spec.Secrets.AgentToken.Reveal()),
			secretVNCPass:    []byte(spec.Secrets.VNCPassword.Reveal()),
		},
	}
}

// podFor is machine spec's Pod, with a screen of w×h.
func (d *Driver) podFor(spec mc.MachineSpec, w, h int) *corev1.Pod {
	name := PodName(spec.ID)
	args := []string{
		"--listen", "0.0.0.0:" + strconv.Itoa(AgentPort),
		"--vnc-listen", "0.0.0.0:" + strconv.Itoa(VNCPort),
		"--display", "1",
		"--home", home,
		"--tmp-dir", "/tmp/mc",
		"--token-file", runDir + "/" + secretAgentToken,
		"--vnc-password-file", runDir + "/" + secretVNCPass,
		"--xauth-file", runDir + "/xauth",
		"--cli-dir", "/opt/mc/clis/node_modules/.bin",
		"--geometry", fmt.Sprintf("%dx%d", w, h),
	}
	if spec.StartURL != "" {
		args = append(args, "--start-url", spec.StartURL)
	}
	seccomp := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	if d.cfg.SeccompProfile != "" {
		seccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: new(d.cfg.SeccompProfile)}
	}
	resources := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		list corev1.ResourceList
		name corev1.ResourceName
		v    string
	}{
		{resources.Requests, corev1.ResourceCPU, d.cfg.CPURequest},
		{resources.Limits, corev1.ResourceCPU, d.cfg.CPULimit},
		{resources.Requests, corev1.ResourceMemory, d.cfg.MemoryRequest},
		{resources.Limits, corev1.ResourceMemory, d.cfg.MemoryLimit},
	} {
		if q.v != "-" {
			q.list[q.name] = resource.MustParse(q.v) // checked by defaults
		}
	}
	emptyDir := func(n string, size int64, medium corev1.StorageMedium) corev1.Volume {
		return corev1.Volume{Name: n, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: medium, SizeLimit: resource.NewQuantity(size, resource.BinarySI)}}}
	}
	var runtimeClass *string
	if d.cfg.RuntimeClassName != "" {
		runtimeClass = new(d.cfg.RuntimeClassName)
	}
	grace := int64(d.cfg.DestroyGrace.Seconds())
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.cfg.Namespace, Labels: d.labels(spec), Annotations: d.annotations(spec)},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  new(false),
			EnableServiceLinks:            new(false),
			RuntimeClassName:              runtimeClass,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: new(true), RunAsUser: new(int64(machineUID)), RunAsGroup: new(int64(machineUID)),
				FSGroup: new(int64(machineUID)), SeccompProfile: seccomp,
			},
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           d.cfg.Image,
				ImagePullPolicy: d.cfg.ImagePullPolicy,
				Args:            args,
				Ports: []corev1.ContainerPort{
					{Name: "vnc", ContainerPort: VNCPort, Protocol: corev1.ProtocolTCP},
					{Name: "agent", ContainerPort: AgentPort, Protocol: corev1.ProtocolTCP},
				},
				Resources: resources,
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             new(true),
					AllowPrivilegeEscalation: new(false),
					ReadOnlyRootFilesystem:   new(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           seccomp,
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "home", MountPath: home},
					{Name: "tmp", MountPath: "/tmp"},
					{Name: "shm", MountPath: "/dev/shm"},
					{Name: "run", MountPath: runDir},
					{Name: "secret", MountPath: runDir + "/" + secretAgentToken, SubPath: secretAgentToken, ReadOnly: true},
					{Name: "secret", MountPath: runDir + "/" + secretVNCPass, SubPath: secretVNCPass, ReadOnly: true},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: []corev1.Volume{
				emptyDir("home", d.cfg.HomeSize, ""),
				emptyDir("tmp", d.cfg.TmpSize, ""),
				emptyDir("shm", d.cfg.ShmSize, corev1.StorageMediumMemory),
				emptyDir("run", 1<<20, corev1.StorageMediumMemory),
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: name, DefaultMode: new(int32(0o440))}}},
			},
		},
	}
}

// newPodInformer watches the machine Pods of namespace (only they: the
// label selector keeps other Pods out of the cache).
func newPodInformer(client k8s.Interface, namespace string) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = machineSelector
			return client.CoreV1().Pods(namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = machineSelector
			return client.CoreV1().Pods(namespace).Watch(ctx, o)
		},
	}
	// The client says whether it can stream the first listing (WatchList):
	// a real API server can, client-go's fake cannot.
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), &corev1.Pod{}, 0, cache.Indexers{})
}
