package kubernetes

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Events calls died with the worker id of each pod of this provider and
// installation that has stopped: it failed or ended (its agent exited),
// was evicted by its node, or is gone. A pod that is only being deleted
// is not reported until it is gone: its agent got SIGTERM and drains,
// and its jobs may still finish within the grace period; once the pod
// is gone, nothing of it runs. A pod informer watches them (list, then
// watch, relisting when the watch breaks) until ctx ends; then Events
// returns nil. Pods already dead when it starts are reported too, and a
// death may be reported more than once: died must be idempotent. died
// runs on the informer's goroutine and should not block long.
func (p *Provider) Events(ctx context.Context, died func(workerID string)) error {
	f := informers.NewSharedInformerFactoryWithOptions(p.cs, 0, informers.WithNamespace(p.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = p.selector() }))
	inf := f.Core().V1().Pods().Informer()
	check := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && (pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded) {
			p.log.Debug("worker pod stopped", "pod", pod.Name, "phase", pod.Status.Phase, "reason", pod.Status.Reason,
				"deleting", pod.DeletionTimestamp != nil)
			died(pod.Labels[LabelWorkerID])
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { check(obj) },
		UpdateFunc: func(_, obj any) { check(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				died(pod.Labels[LabelWorkerID])
			}
		},
	})
	if err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	return nil
}
