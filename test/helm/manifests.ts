/**
 * The shapes of the Kubernetes objects the chart renders, as far as the tests
 * read them: the fields the chart always renders are required, the ones a
 * test checks for absence are optional. Parsed YAML and kubectl's JSON are
 * cast to these (they are not validated: a wrong field fails the assertion
 * that reads it).
 *
 *   Manifests[kind]       the interface of an object of that kind
 *   hasPodTemplate(o)     whether an object has spec.template (DaemonSet, Deployment, ...)
 */

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

export interface Probe {
  httpGet: { path: string; port: string | number; scheme?: string };
  periodSeconds: number;
  failureThreshold: number;
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  mountPropagation?: string;
}

export interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string };
  secret?: { secretName: string };
}

export interface Container {
  name: string;
  image: string;
  args: string[];
  env: { name: string; valueFrom: { fieldRef: { fieldPath: string } } }[];
  ports: { name: string; containerPort: number; protocol?: string }[];
  volumeMounts?: VolumeMount[];
  securityContext: { capabilities: { add?: string[]; drop?: string[] } } & Record<string, unknown>;
  resources?: Record<string, unknown>;
  startupProbe: Probe;
  livenessProbe: Probe;
  readinessProbe: Probe;
}

export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  hostPID?: boolean;
  hostNetwork?: boolean;
  hostIPC?: boolean;
  shareProcessNamespace?: boolean;
  enableServiceLinks?: boolean;
  automountServiceAccountToken?: boolean;
  priorityClassName?: string;
  tolerations?: Record<string, unknown>[];
  securityContext?: Record<string, unknown>;
}

/** A DaemonSet or a Deployment. */
export interface Workload extends K8sObject {
  spec: {
    replicas?: number;
    selector: LabelSelector;
    template: { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };
  };
}

export interface ConfigMap extends K8sObject {
  data: Record<string, string>;
}

export interface Secret extends K8sObject {
  type: string;
}

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
  verbs: string[];
}

export interface Role extends K8sObject {
  kind: 'ClusterRole' | 'Role';
  rules: PolicyRule[];
}

export interface RoleBinding extends K8sObject {
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects: { kind: string; name: string; namespace?: string }[];
}

/** A ServiceMonitor's endpoint or a PodMonitor's podMetricsEndpoint. */
export interface Endpoint {
  port: string;
  scheme?: string;
  honorLabels?: boolean;
  relabelings: { targetLabel: string; replacement?: string }[];
  authorization?: unknown;
  tlsConfig?: unknown;
}

/** A ServiceMonitor (endpoints) or a PodMonitor (podMetricsEndpoints). */
export interface Monitor extends K8sObject {
  spec: { endpoints?: Endpoint[]; podMetricsEndpoints?: Endpoint[] };
}

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface RecordingRule {
  record: string;
  expr: string;
  labels?: Record<string, string>;
}

export interface RuleGroup {
  name: string;
  rules: AlertRule[];
}

/** A group of recording rules (monitoring.opencost). */
export interface RecordingRuleGroup {
  name: string;
  interval?: string;
  rules: RecordingRule[];
}

export interface PrometheusRule extends K8sObject {
  spec: { groups: RuleGroup[] };
}

export interface NetworkPolicyPeer {
  namespaceSelector?: LabelSelector;
  podSelector?: LabelSelector;
  ipBlock?: { cidr: string };
}

export interface NetworkPolicy extends K8sObject {
  spec: {
    podSelector: LabelSelector & { matchLabels: Record<string, string> };
    policyTypes: string[];
    ingress: { ports?: unknown[]; from?: NetworkPolicyPeer[] }[];
    egress?: { ports?: unknown[]; to?: NetworkPolicyPeer[] }[];
  };
}

export interface PodDisruptionBudget extends K8sObject {
  spec: { maxUnavailable?: number; minAvailable?: number };
}

/** An OpenAPI v3 schema as CRDs and values.schema.json write them. */
export interface JsonSchema {
  type?: string;
  pattern?: string;
  format?: string;
  minimum?: number;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
}

export interface CustomResourceDefinition extends K8sObject {
  spec: {
    group: string;
    names: { kind: string; plural: string };
    versions: {
      name: string;
      served: boolean;
      storage: boolean;
      schema: { openAPIV3Schema: JsonSchema };
      additionalPrinterColumns: { name: string; priority?: number }[];
    }[];
  };
}

/** What kubectl get -o json answers for several objects. */
export interface List extends K8sObject {
  items: K8sObject[];
}

export interface Manifests {
  Namespace: K8sObject;
  DaemonSet: Workload;
  Deployment: Workload;
  ConfigMap: ConfigMap;
  Secret: Secret;
  ClusterRole: Role;
  Role: Role;
  ClusterRoleBinding: RoleBinding;
  RoleBinding: RoleBinding;
  ServiceMonitor: Monitor;
  PodMonitor: Monitor;
  PrometheusRule: PrometheusRule;
  NetworkPolicy: NetworkPolicy;
  PodDisruptionBudget: PodDisruptionBudget;
  CustomResourceDefinition: CustomResourceDefinition;
}

export type Kind = keyof Manifests;

/** The probes every container of the chart has. */
export const PROBES = ['startupProbe', 'livenessProbe', 'readinessProbe'] as const;

/** Whether `o` has a pod template (spec.template), as a DaemonSet or a Deployment has. */
export function hasPodTemplate(o: K8sObject): o is Workload {
  const spec = (o as Partial<Workload>).spec;
  return typeof spec === 'object' && typeof spec.template === 'object';
}
