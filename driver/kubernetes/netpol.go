package kubernetes

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PolicyName is the NetworkPolicy that admits the controller to machines.
//
// One policy for the namespace, not one per machine: the rule is the same
// for every machine (only the controller, only the VNC and agent ports), so
// per-machine copies would add an API write to every start and an object to
// every teardown, and a machine would run unprotected between its Pod and
// its policy. The driver writes it at start, so a changed setting reaches
// every machine at once. With the namespace's deny-all policy
// (deploy/kubernetes/networkpolicy.yaml) nothing else reaches a machine,
// another machine included. A network plugin that enforces policies is
// needed (the bridge plugin of the test cluster does not).
const PolicyName = "mc-machines-admit-controller"

// policy is the NetworkPolicy the configuration asks for.
func (d *Driver) policy() *networkingv1.NetworkPolicy {
	var peers []networkingv1.NetworkPolicyPeer
	if d.cfg.Controller.Labels != "-" {
		set, _ := labels.ConvertSelectorToLabelsMap(d.cfg.Controller.Labels) // checked by defaults
		peers = append(peers, networkingv1.NetworkPolicyPeer{
			PodSelector: &metav1.LabelSelector{MatchLabels: set},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
				"kubernetes.io/metadata.name": d.cfg.Controller.Namespace}},
		})
	}
	for _, c := range d.cfg.Controller.CIDRs {
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c.Masked().String()}})
	}
	tcp := corev1.ProtocolTCP
	port := func(p int) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(int32(p))
		return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &v}
	}
	rules := []networkingv1.NetworkPolicyIngressRule{}
	if len(peers) > 0 {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{From: peers,
			Ports: []networkingv1.NetworkPolicyPort{port(VNCPort), port(AgentPort)}})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Namespace: d.cfg.Namespace,
			Labels: map[string]string{labelManagedBy: managedBy}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{labelManagedBy: managedBy, labelComponent: component}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

// ensurePolicy creates the NetworkPolicy, or updates it to the
// configuration's.
func (d *Driver) ensurePolicy(ctx context.Context) error {
	want := d.policy()
	api := d.client.NetworkingV1().NetworkPolicies(d.cfg.Namespace)
	cur, err := api.Get(ctx, PolicyName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create network policy %s: %w", PolicyName, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get network policy %s: %w", PolicyName, err)
	}
	if apiequality.Semantic.DeepEqual(cur.Spec, want.Spec) {
		return nil
	}
	cur.Spec = want.Spec
	if _, err := api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update network policy %s: %w", PolicyName, err)
	}
	return nil
}
