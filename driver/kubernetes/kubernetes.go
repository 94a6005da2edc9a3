// Package kubernetes is the driver that runs each machine as a Pod in a
// Kubernetes cluster (MC_DRIVER=kubernetes), placed by the cluster's
// scheduler.
//
// A machine is a Pod from the machine image (scripts/image/build.sh) whose
// entry point is mc-agent, and a Secret that holds the machine's VNC
// password and agent token, mounted as files and owned by the Pod (deleting
// the Pod deletes it). The Pod runs without privileges: non-root, no
// privilege escalation, every capability dropped, a seccomp profile
// (RuntimeDefault, or a Localhost profile that adds what Chromium's own
// sandbox needs: see deploy/kubernetes/seccomp), a read-only root file
// system with emptyDirs for home, /tmp and /dev/shm, and a runtimeClassName
// of the operator's choice (gVisor, Kata). One NetworkPolicy in the
// namespace admits only the controller to the VNC and agent ports.
//
// The gateway dials the Pod's IP. The driver watches the namespace's
// machine Pods through one informer (a shared watch): List, Inspect, Wait
// and the cluster-wide cap read its cache, and a Pod that is deleted,
// evicted, killed for memory, cannot pull its image or stays unschedulable
// ends its machine with that reason as soon as the cluster says so.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	mc "github.com/master-controller/mc"
)

// Name is the driver's name in configuration and in Machine.Driver.
const Name = "kubernetes"

// The machine's ports inside its Pod (the Pod has a network namespace of
// its own, so they are the same in every machine).
const (
	VNCPort   = 5900
	AgentPort = 8080
)

// Config configures the driver. The zero value of a field takes the default
// in its comment.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; "" uses the in-cluster
	// configuration (the Pod's service account).
	Kubeconfig string
	// Namespace holds the machines' Pods, Secrets and NetworkPolicy
	// (default "mc-machines").
	Namespace string
	// Image is the machine image (scripts/image/build.sh prints it);
	// required.
	Image string
	// ImagePullPolicy is Always, IfNotPresent or Never (default
	// IfNotPresent; Never for an image imported into the node).
	ImagePullPolicy corev1.PullPolicy
	// RuntimeClassName, when set, runs machines under that RuntimeClass
	// (gVisor, Kata Containers).
	RuntimeClassName string
	// SeccompProfile is "" for RuntimeDefault, or the path of a Localhost
	// profile relative to the kubelet's seccomp directory (for example
	// "mc-chromium.json", deploy/kubernetes/seccomp/): Chromium's
	// user-namespace sandbox needs it where RuntimeDefault refuses
	// unshare(CLONE_NEWUSER), as containerd 1.6's does.
	SeccompProfile string
	// Replica names this controller replica (a label and an annotation of
	// every Pod it creates).
	Replica string
	// MaxMachines caps the machine Pods in the namespace, every replica's
	// together (default 50). Create past it fails EUNAVAILABLE.
	MaxMachines int
	// Network is the pod network the gateway may dial; required (every
	// machine's IP must be inside it).
	Network netip.Prefix
	// Requests and limits of each machine's container ("" for none; the
	// defaults are CPU 250m/1, memory 512Mi/1Gi).
	CPURequest, CPULimit, MemoryRequest, MemoryLimit string
	// ShmSize, TmpSize and HomeSize bound /dev/shm (memory), /tmp and the
	// home directory in bytes (default 256 MiB each).
	ShmSize, TmpSize, HomeSize int64
	// UnschedulableWait is how long a Pod may stay unschedulable before its
	// machine fails "unschedulable" (default 30 s).
	UnschedulableWait time.Duration
	// DestroyGrace is the Pod's termination grace period: the agent stops
	// Xvnc and Chromium on SIGTERM well within it (default 5 s).
	DestroyGrace time.Duration
	// Controller says who may dial machines: the NetworkPolicy admits
	// these peers, and nothing else, to the VNC and agent ports.
	Controller Peers
	// SyncTimeout bounds the informer's first listing in New (default 30 s).
	SyncTimeout time.Duration
}

// Peers are the controller's replicas as a NetworkPolicy names them.
type Peers struct {
	// Labels select the controller's Pods (default
	// "app.kubernetes.io/name=master-controller"); "-" for none (a
	// controller outside the cluster).
	Labels string
	// Namespace is theirs (default: the namespace of the Pod the driver
	// runs in, else "master-controller").
	Namespace string
	// CIDRs admit controllers outside the cluster by address.
	CIDRs []netip.Prefix
}

// Defaults of Config.
const (
	DefaultNamespace         = "mc-machines"
	DefaultMaxMachines       = 50
	DefaultUnschedulableWait = 30 * time.Second
	DefaultControllerLabels  = "app.kubernetes.io/name=master-controller"
)

func (c *Config) defaults() error {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.MaxMachines <= 0 {
		c.MaxMachines = DefaultMaxMachines
	}
	if c.UnschedulableWait <= 0 {
		c.UnschedulableWait = DefaultUnschedulableWait
	}
	if c.DestroyGrace <= 0 {
		c.DestroyGrace = 5 * time.Second
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 30 * time.Second
	}
	for _, p := range []*int64{&c.ShmSize, &c.TmpSize, &c.HomeSize} {
		if *p <= 0 {
			*p = 256 << 20
		}
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.CPURequest, "250m")
	def(&c.CPULimit, "1")
	def(&c.MemoryRequest, "512Mi")
	def(&c.MemoryLimit, "1Gi")
	def(&c.Controller.Labels, DefaultControllerLabels)
	if c.Controller.Namespace == "" {
		c.Controller.Namespace = "master-controller"
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(b) > 0 {
			c.Controller.Namespace = strings.TrimSpace(string(b))
		}
	}
	var problems []string
	if c.Image == "" {
		problems = append(problems, "no machine image")
	}
	if !c.Network.IsValid() {
		problems = append(problems, "no pod network")
	}
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		problems = append(problems, fmt.Sprintf("image pull policy %q is not Always, IfNotPresent or Never", c.ImagePullPolicy))
	}
	for name, q := range map[string]string{"CPU request": c.CPURequest, "CPU limit": c.CPULimit,
		"memory request": c.MemoryRequest, "memory limit": c.MemoryLimit} {
		if q == "-" {
			continue
		}
		if _, err := resource.ParseQuantity(q); err != nil {
			problems = append(problems, fmt.Sprintf("%s %q is not a quantity", name, q))
		}
	}
	if c.Controller.Labels != "-" {
		if _, err := labels.ConvertSelectorToLabelsMap(c.Controller.Labels); err != nil {
			problems = append(problems, fmt.Sprintf("controller labels %q: %v", c.Controller.Labels, err))
		}
	}
	if len(problems) > 0 {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSpec, "kubernetes driver: %s", strings.Join(problems, "; "))
	}
	return nil
}

// RESTConfig is the client configuration of kubeconfig ("" for in-cluster).
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (set a kubeconfig outside a cluster): %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// Driver runs machines as Pods. Close stops its watch.
type Driver struct {
	cfg    Config
	client k8s.Interface
	log    *slog.Logger
	now    func() time.Time

	informer cache.SharedIndexInformer
	// stop ends the watch (Close).
	stop context.CancelFunc
	// capMu makes the cap's count and the reservation one step.
	capMu sync.Mutex

	mu sync.Mutex
	// policyErr is the NetworkPolicy's last failure (Check retries it).
	policyErr error
	// changed has a channel per Pod name that the informer closes (and
	// forgets) on the Pod's next event: Wait and Create block on it.
	changed map[string]chan struct{}
	// creating are the Pods being created, not yet in the informer's
	// cache: the cap counts them.
	creating map[string]bool
	// destroying are Pods this process deletes: their deletion is not an
	// eviction.
	destroying map[string]bool
	// gone are the last states of deleted Pods, for a Wait that wakes
	// after the deletion (kept a minute).
	gone map[string]gonePod
	// waits counts the Waits blocked until their Pod changes (tests make
	// the change once one is).
	waits atomic.Int64
}

type gonePod struct {
	pod *corev1.Pod
	at  time.Time
}

var _ mc.Driver = (*Driver)(nil)

// New connects to the cluster that cfg names, starts the watch of the
// namespace's machine Pods and waits for its first listing, and makes sure
// of the namespace's NetworkPolicy.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Driver, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rc, err := RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "master-controller/" + cfg.Replica
	client, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return NewWithClient(ctx, cfg, client, log)
}

// NewWithClient is New over an existing client (tests use client-go's fake).
func NewWithClient(ctx context.Context, cfg Config, client k8s.Interface, log *slog.Logger) (*Driver, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		cfg: cfg, client: client, log: log.With("driver", Name), now: time.Now,
		changed:    map[string]chan struct{}{},
		creating:   map[string]bool{},
		destroying: map[string]bool{},
		gone:       map[string]gonePod{},
	}
	d.informer = newPodInformer(client, cfg.Namespace)
	if _, err := d.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.onEvent(obj, false) },
		UpdateFunc: func(_, obj any) { d.onEvent(obj, false) },
		DeleteFunc: func(obj any) { d.onEvent(obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("watch machine pods: %w", err)
	}
	if err := d.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if !errors.Is(err, context.Canceled) {
			d.log.Warn("watch of machine pods broke; it resumes by itself", mc.LogError, err.Error())
		}
	}); err != nil {
		return nil, fmt.Errorf("watch machine pods: %w", err)
	}
	// The watch logs (through klog's contextual logging) into this log,
	// not stderr; it lives until Close, not as long as ctx.
	wctx, stop := context.WithCancel(klog.NewContext(context.Background(),
		logr.FromSlogHandler(d.log.With("component", "client-go").Handler())))
	d.stop = stop
	go d.informer.RunWithContext(wctx)
	sctx, cancel := context.WithTimeout(ctx, cfg.SyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), d.informer.HasSynced) {
		d.Close()
		return nil, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonClusterUnreachable,
			"kubernetes driver: no listing of pods in namespace %s within %v (is the cluster reachable, and may this account list pods there?)",
			cfg.Namespace, cfg.SyncTimeout)
	}
	if err := d.ensurePolicy(ctx); err != nil {
		d.policyErr = err
		d.log.Error("network policy of machines", mc.LogReason, mc.ReasonClusterUnreachable, mc.LogError, err.Error())
	}
	return d, nil
}

// Close stops the watch. Machines keep running (another replica, or this
// one after a restart, adopts them).
func (d *Driver) Close() error {
	d.stop()
	return nil
}

// Name returns "kubernetes".
func (d *Driver) Name() string { return Name }

// Capabilities: VM-grade isolation is the runtime class's; the driver
// reports "netns" (a Pod has a network namespace of its own), the pod
// network, and the cluster-wide cap.
func (d *Driver) Capabilities() mc.Capabilities {
	return mc.Capabilities{Isolation: "netns", Network: d.cfg.Network, MaxMachines: d.cfg.MaxMachines, Cluster: true}
}

// Check verifies that the watch has listed the namespace and that the
// account may still list its Pods (one small request).
func (d *Driver) Check(ctx context.Context) error {
	if !d.informer.HasSynced() {
		return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonClusterUnreachable, "kubernetes driver: the watch of namespace %s has not listed it yet", d.cfg.Namespace)
	}
	d.mu.Lock()
	perr := d.policyErr
	d.mu.Unlock()
	if perr != nil {
		if err := d.ensurePolicy(ctx); err != nil {
			return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonClusterUnreachable, "kubernetes driver: network policy of machines: %v", err)
		}
		d.mu.Lock()
		d.policyErr = nil
		d.mu.Unlock()
	}
	if _, err := d.client.CoreV1().Pods(d.cfg.Namespace).List(ctx, listOne); err != nil {
		return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonClusterUnreachable, "kubernetes driver: list pods in namespace %s: %v", d.cfg.Namespace, err)
	}
	return nil
}

// onEvent wakes whoever waits on the Pod of obj (deleted: its last state).
func (d *Driver) onEvent(obj any, deleted bool) {
	var p *corev1.Pod
	switch o := obj.(type) {
	case *corev1.Pod:
		p = o
	case cache.DeletedFinalStateUnknown:
		p, _ = o.Obj.(*corev1.Pod)
	}
	if p == nil {
		return
	}
	name := p.Name
	now := d.now()
	d.mu.Lock()
	if deleted {
		for n, g := range d.gone {
			if now.Sub(g.at) > time.Minute {
				delete(d.gone, n)
			}
		}
		d.gone[name] = gonePod{p, now}
	} else {
		delete(d.gone, name)
	}
	delete(d.creating, name)
	if ch, ok := d.changed[name]; ok {
		close(ch)
		delete(d.changed, name)
	}
	d.mu.Unlock()
}

// next returns a channel closed on the next event of Pod name. Take it
// before reading the cache, so that no event falls between.
func (d *Driver) next(name string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch, ok := d.changed[name]
	if !ok {
		ch = make(chan struct{})
		d.changed[name] = ch
	}
	return ch
}

// final is the last state of deleted Pod name, or nil.
func (d *Driver) final(name string) *corev1.Pod {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gone[name].pod
}

// pod returns the cached Pod of machine id, or nil.
func (d *Driver) pod(id string) *corev1.Pod {
	obj, ok, err := d.informer.GetStore().GetByKey(d.cfg.Namespace + "/" + PodName(id))
	if err != nil || !ok {
		return nil
	}
	p, _ := obj.(*corev1.Pod)
	if p == nil || p.Annotations[annotMachineID] != id {
		return nil // another id's Pod by a hash collision: not this machine
	}
	return p
}
