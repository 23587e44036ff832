package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"github.com/hodei-dev/hodei/internal/provider"
)

// Names inside a worker pod.
const (
	agentVolume   = "hodei-agent" // the emptyDir the init container fills
	agentDir      = "/hodei"      // where it is mounted
	agentCommand  = agentDir + "/hodei"
	mainContainer = "worker"
	initContainer = "hodei-agent"
	secretKey     = "token" // the bootstrap token's key in the worker's Secret
)

// Overrides shape every worker pod. They are read from a YAML file:
//
//	nodeSelector: {pool: ci}
//	tolerations: [{key: dedicated, operator: Equal, value: ci, effect: NoSchedule}]
//	podTemplate:            # a Pod, merged into each worker pod (strategic merge)
//	  metadata: {annotations: {team: build}}
//	  spec: {priorityClassName: batch}
//
// The template may not change what makes a pod a worker: its labels
// hodei.dev/*, its containers' commands and the token's environment are
// set after the merge.
type Overrides struct {
	NodeSelector map[string]string   `json:"nodeSelector,omitempty"`
	Tolerations  []corev1.Toleration `json:"tolerations,omitempty"`
	// PodTemplate is a Pod as JSON (YAML in the file), checked by
	// ParseOverrides.
	PodTemplate json.RawMessage `json:"podTemplate,omitempty"`
}

// ReadOverrides reads Overrides from a YAML file; unknown fields are
// errors that name them.
func ReadOverrides(path string) (Overrides, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Overrides{}, fmt.Errorf("pod overrides: %w", err)
	}
	return ParseOverrides(b)
}

// ParseOverrides parses Overrides from YAML or JSON.
func ParseOverrides(b []byte) (Overrides, error) {
	var o Overrides
	if err := yaml.UnmarshalStrict(b, &o); err != nil {
		return Overrides{}, fmt.Errorf("pod overrides: %w", err)
	}
	if len(o.PodTemplate) > 0 {
		dec := json.NewDecoder(bytes.NewReader(o.PodTemplate))
		dec.DisallowUnknownFields()
		var pod corev1.Pod
		if err := dec.Decode(&pod); err != nil {
			return Overrides{}, fmt.Errorf("pod overrides: podTemplate: %w", err)
		}
	}
	return o, nil
}

var invalidName = regexp.MustCompile(`[^a-z0-9-]+`)

// podName is "hodei-" and the worker id, as a DNS label.
func podName(workerID string) string {
	n := "hodei-" + strings.Trim(invalidName.ReplaceAllString(strings.ToLower(workerID), "-"), "-")
	return strings.TrimRight(n[:min(len(n), 63)], "-")
}

// agentEnv is the environment of the agent: the one place it is built.
func (p *Provider) agentEnv(workerID, secretName string) []corev1.EnvVar {
	env := make([]corev1.EnvVar, 0, len(p.cfg.Env)+2)
	for _, kv := range p.cfg.Env {
		k, v, _ := strings.Cut(kv, "=")
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	return append(env,
		corev1.EnvVar{Name: "HODEI_WORKER_ID", Value: workerID},
		corev1.EnvVar{Name: "HODEI_BOOTSTRAP_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secretName}, Key: secretKey}}},
	)
}

func requirements(res Resources) corev1.ResourceRequirements {
	rl := corev1.ResourceList{}
	if res.CPUMillis > 0 {
		rl[corev1.ResourceCPU] = *resource.NewMilliQuantity(res.CPUMillis, resource.DecimalSI)
	}
	if res.MemoryMiB > 0 {
		rl[corev1.ResourceMemory] = *resource.NewQuantity(res.MemoryMiB<<20, resource.BinarySI)
	}
	if len(rl) == 0 {
		return corev1.ResourceRequirements{}
	}
	return corev1.ResourceRequirements{Requests: rl, Limits: rl.DeepCopy()}
}

// pod is the worker pod of workerID (its Secret has the pod's name).
func (p *Provider) pod(workerID string, spec provider.Spec) *corev1.Pod {
	image := spec.Image
	if image == "" {
		image = p.cfg.DefaultImage
	}
	res := Resources{CPUMillis: spec.CPUMillis, MemoryMiB: spec.MemoryMiB}
	if res.CPUMillis <= 0 {
		res.CPUMillis = p.cfg.Resources.CPUMillis
	}
	if res.MemoryMiB <= 0 {
		res.MemoryMiB = p.cfg.Resources.MemoryMiB
	}
	name := podName(workerID)
	grace := int64(math.Ceil(p.cfg.Grace.Seconds()))
	mount := []corev1.VolumeMount{{Name: agentVolume, MountPath: agentDir}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			ServiceAccountName:            p.cfg.ServiceAccount,
			NodeSelector:                  p.cfg.Overrides.NodeSelector,
			Tolerations:                   p.cfg.Overrides.Tolerations,
			Volumes:                       []corev1.Volume{{Name: agentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{
				Name: initContainer, Image: p.cfg.AgentImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"cp", AgentBinaryPath, agentCommand}, VolumeMounts: mount,
			}},
			Containers: []corev1.Container{{
				Name: mainContainer, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{agentCommand}, VolumeMounts: mount,
				Resources: requirements(res),
			}},
		},
	}
	if t := p.cfg.Overrides.PodTemplate; len(t) > 0 {
		merged, err := mergePod(pod, t)
		if err != nil {
			p.log.Warn("pod template not applied", "err", err)
		} else {
			pod = merged
		}
	}
	// What makes the pod this worker comes last, over the template.
	pod.Name, pod.GenerateName, pod.Namespace = name, "", p.cfg.Namespace
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	for k, v := range p.labels(workerID) {
		pod.Labels[k] = v
	}
	c := &pod.Spec.Containers[0]
	c.Command = []string{agentCommand}
	c.Args = provider.AgentArgs(p.cfg.Server, p.cfg.Args, spec, res.CPUMillis, res.MemoryMiB)
	c.Env = append(c.Env, p.agentEnv(workerID, name)...)
	return pod
}

// mergePod applies the template to the pod as a strategic merge patch
// (lists of containers, volumes, tolerations merge by name or key).
func mergePod(pod *corev1.Pod, patch []byte) (*corev1.Pod, error) {
	orig, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	b, err := strategicpatch.StrategicMergePatch(orig, patch, corev1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("merge the pod template: %w", err)
	}
	var out corev1.Pod
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if len(out.Spec.Containers) == 0 || out.Spec.Containers[0].Name != mainContainer {
		return nil, fmt.Errorf("the pod template reorders the containers: %q must stay first", mainContainer)
	}
	return &out, nil
}
