"""Forms of the clusters app. Secrets are write-only: never rendered back, blank keeps the stored value."""

import re

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from clusters.actions.deploy import accelerated_images, namespace_refusal
from clusters.choices import AuthMethod, LabelOperation, SuiteOperation
from clusters.kubeconfig import MAX_KUBECONFIG_BYTES, parse_kubeconfig
from clusters.models import Cluster, DeployRequest
from clusters.validators import (
    credentials_again,
    image_of_instance,
    moved_to_another_host,
    validate_dns_label,
    validate_image_tag,
    validate_label_selector,
)
from core.forms import preselect_single_choice
from registries.models import Instance


def apply_kubeconfig(cluster: Cluster, text: str, context: str) -> None:
    """Copy the chosen context's server, CA and credentials onto the cluster (ValidationError if unusable)."""
    credentials = parse_kubeconfig(text, context)
    cluster.auth_method = AuthMethod.KUBECONFIG
    cluster.context_name = credentials.context
    credentials.apply_to(cluster)


class NamespaceListField(forms.CharField):
    """Namespace names typed as one line, separated by commas or spaces; a list in Python."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        names = re.split(r"[\s,]+", super().to_python(value))
        return list(dict.fromkeys(name for name in names if name))


class ClusterForm(forms.ModelForm):
    """Register or edit a cluster, from a kubeconfig (one context) or an API server URL and token."""

    kubeconfig = forms.FileField(
        required=False, help_text="A kubeconfig with inline credentials (token or client certificate). "
        "Files produced by `kubectl config view --raw --flatten --minify` work.",
    )
    context = forms.CharField(required=False, max_length=253,
                              help_text="Context to use; blank uses the file's current-context.")
    token = forms.CharField(
        label="Bearer token", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="A ServiceAccount token. Stored encrypted, never shown again.",
    )
    deploy_namespaces = NamespaceListField(
        label="Deploy namespaces", required=False, max_length=6500,
        help_text="Namespaces operators may deploy into, separated by commas (e.g. default, web). Leave it empty "
                  "to allow no deploys on this cluster.",
    )

    class Meta:
        model = Cluster
        fields = ["name", "description", "auth_method", "kubeconfig", "context", "server", "ca_data",
                  "insecure_skip_tls_verify", "auto_label", "deploy_namespaces"]
        widgets = {"auth_method": forms.RadioSelect, "description": forms.Textarea(attrs={"rows": 2}),
                   "ca_data": forms.Textarea(attrs={"rows": 4, "placeholder": "-----BEGIN CERTIFICATE-----"})}

    # Fields that belong to one connection method: the page shows only the chosen method's (app.js;
    # without JavaScript every field shows, and clean() ignores the other method's).
    shown_when = {
        **dict.fromkeys(["kubeconfig", "context"], f"auth_method={AuthMethod.KUBECONFIG}"),
        **dict.fromkeys(["server", "ca_data", "insecure_skip_tls_verify", "token"], f"auth_method={AuthMethod.TOKEN}"),
    }

    field_order = ["name", "description", "auth_method", "kubeconfig", "context", "server", "ca_data",
                   "insecure_skip_tls_verify", "token", "auto_label", "deploy_namespaces"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored_server = self.instance.server if self.instance.pk else ""  # before a kubeconfig replaces it
        self.fields["server"].required = False
        if self.instance.pk and self.instance.token:
            self.fields["token"].help_text = "A token is stored; leave blank to keep it."

    def clean(self):
        cleaned = super().clean()
        method = cleaned.get("auth_method")
        cluster = self.instance
        if method == AuthMethod.KUBECONFIG:
            upload = cleaned.get("kubeconfig")
            if upload is None:
                if not (cluster.pk and cluster.auth_method == AuthMethod.KUBECONFIG):
                    self.add_error("kubeconfig", "Upload a kubeconfig file.")
                elif moved_to_another_host(self.stored_server, cleaned.get("server")):
                    self.add_error("kubeconfig", credentials_again("upload the kubeconfig"))
                return cleaned
            if upload.size > MAX_KUBECONFIG_BYTES:
                self.add_error("kubeconfig", "The kubeconfig is larger than 512 KiB; is this the right file?")
                return cleaned
            try:
                text = upload.read().decode()
                apply_kubeconfig(cluster, text, cleaned.get("context", ""))
            except UnicodeDecodeError:
                self.add_error("kubeconfig", "The kubeconfig is not a text file.")
            except ValidationError as error:
                self.add_error("kubeconfig", error)
            cleaned["server"], cleaned["ca_data"] = cluster.server, cluster.ca_data
            cleaned["insecure_skip_tls_verify"] = cluster.insecure_skip_tls_verify
            return cleaned
        if method == AuthMethod.TOKEN:
            if not cleaned.get("server") and "server" not in self.errors:
                self.add_error("server", "Give the API server URL, e.g. https://10.0.0.1:6443.")
            if not cleaned.get("token") and not (cluster.pk and cluster.token):
                self.add_error("token", "Give a bearer token (e.g. from `kubectl create token <serviceaccount>`).")
            elif not cleaned.get("token") and moved_to_another_host(self.stored_server, cleaned.get("server")):
                self.add_error("token", credentials_again("give the bearer token"))
        return cleaned

    def _post_clean(self):
        super()._post_clean()
        cluster = self.instance
        if self.cleaned_data.get("auth_method") == AuthMethod.TOKEN:
            if self.cleaned_data.get("token"):
                cluster.token = self.cleaned_data["token"]
            cluster.context_name = ""
            cluster.client_certificate = cluster.client_key = ""
            cluster.tls_server_name = ""


class LabelForm(forms.Form):
    """Which nodes to label or unlabel: checked ones, all compatible ones, or a label selector.

    EFFECTS is what the form says before the operator confirms: what the label does on a node.
    """

    EFFECTS = (
        "Labelling a node installs the apparate agent there: it restarts containerd once (running containers keep "
        "running). Until the node's agent is ready, the node pulls accelerated images in full: slower, not broken. "
        "Removing the label uninstalls the agent: containerd's configuration is restored and containerd restarts "
        "once more."
    )

    MODES = [("selected", "The nodes I checked"), ("all_compatible", "All compatible nodes"),
             ("selector", "Nodes matching a label selector")]

    operation = forms.ChoiceField(choices=LabelOperation.choices, initial=LabelOperation.LABEL)
    mode = forms.ChoiceField(choices=MODES, initial="selected", widget=forms.RadioSelect)
    nodes = forms.TypedMultipleChoiceField(coerce=int, required=False, choices=[])
    selector = forms.CharField(required=False, max_length=500, validators=[validate_label_selector],
                               help_text="e.g. node-role.kubernetes.io/worker, topology.kubernetes.io/zone=z1")
    clusters = forms.ModelMultipleChoiceField(queryset=Cluster.objects.all(), required=False,
                                              help_text="Limit to these clusters (all when none is chosen).")
    force = forms.BooleanField(required=False, label="Label incompatible nodes too")

    def __init__(self, *args, node_ids=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["nodes"].choices = [(pk, pk) for pk in (node_ids or [])]

    def clean(self):
        cleaned = super().clean()
        mode = cleaned.get("mode")
        if mode == "selected" and not cleaned.get("nodes"):
            self.add_error("nodes", "Check at least one node.")
        if mode == "selector" and not cleaned.get("selector") and "selector" not in self.errors:
            self.add_error("selector", "Give a label selector.")
        return cleaned

    def selection(self) -> dict:
        """Arguments of select_nodes plus a description for the job."""
        data = self.cleaned_data
        cluster_ids = [c.pk for c in data.get("clusters") or []]
        where = f" in {', '.join(c.name for c in data['clusters'])}" if cluster_ids else ""
        if data["mode"] == "selected":
            return {"node_ids": data["nodes"], "cluster_ids": cluster_ids,
                    "description": f"{len(data['nodes'])} checked node(s){where}"}
        if data["mode"] == "all_compatible":
            return {"all_compatible": True, "cluster_ids": cluster_ids,
                    "description": f"all compatible nodes{where}"}
        return {"selector": data["selector"], "cluster_ids": cluster_ids,
                "description": f"selector {data['selector']}{where}"}


class SuiteForm(forms.Form):
    """Install, upgrade or uninstall the acceleration suite."""

    operation = forms.ChoiceField(choices=SuiteOperation.choices)
    instance = forms.ModelChoiceField(queryset=Instance.objects.all(), required=False, label="Registry instance",
                                      help_text="The pull secret and agent configuration use its credentials.")
    namespace = forms.CharField(max_length=63, required=False, validators=[validate_dns_label],
                                help_text=f"Default {settings.APPARATE_SUITE_NAMESPACE}.")
    version = forms.CharField(max_length=128, required=False, validators=[validate_image_tag],
                              help_text=f"Agent version; default {settings.APPARATE_SUITE_VERSION}.")
    force = forms.BooleanField(
        required=False, label="Force: delete without waiting for the nodes",
        help_text="Uninstall only. Nodes whose agent cannot run then keep the snapshotter and containerd's "
                  "configuration.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        preselect_single_choice(self)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("force") and cleaned.get("operation") != SuiteOperation.UNINSTALL:
            self.add_error("force", "Only an uninstall can be forced.")
        return cleaned



class SuggestionsInput(forms.TextInput):
    """A text input with a <datalist> of suggestions: pick one, or type any value."""

    def __init__(self, attrs=None):
        super().__init__(attrs)
        self.choices: list[tuple[str, str]] = []

    def render(self, name, value, attrs=None, renderer=None):
        list_id = f"{(attrs or {}).get('id') or name}-choices"
        field = super().render(name, value, {**(attrs or {}), "list": list_id}, renderer)
        options = format_html_join("", '<option value="{}">{}</option>', self.choices)
        return format_html('{}<datalist id="{}">{}</datalist>', field, list_id, options)


class DeployForm(forms.ModelForm):
    """Deploy an image of an instance: cluster, instance, namespace, name, replicas, image.

    The image field suggests the instance's accelerated images (from its conversion jobs) and
    accepts any typed address in that instance's registry; the instance's credentials make the
    pull secret.
    """

    use_original = forms.BooleanField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = DeployRequest
        fields = ["cluster", "instance", "namespace", "name", "replicas", "image"]
        widgets = {"image": SuggestionsInput(attrs={"autocomplete": "off", "spellcheck": "false"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["instance"].required = True
        self.fields["instance"].widget.attrs.update({
            # Choosing another instance refreshes the image suggestions.
            "hx-get": reverse("clusters:deploy"), "hx-trigger": "change", "hx-include": "closest form",
            "hx-target": "#field-image", "hx-select": "#field-image", "hx-swap": "outerHTML",
        })
        preselect_single_choice(self)
        self.fields["replicas"].validators.append(MinValueValidator(1))
        self.fields["replicas"].widget.attrs["min"] = 1
        instance = self._chosen_instance()
        images = accelerated_images(instance) if instance else []
        self.fields["image"].widget.choices = [
            (twin.accelerated, f"{twin.path}:{twin.twin_tag} (twin of :{twin.source_tag})") for twin in images
        ]
        if instance is None:
            self.fields["image"].help_text = "Choose the instance first; its accelerated images are suggested here."
        elif images:
            self.fields["image"].help_text = (f"Pick one of the {len(images)} accelerated images of {instance.name}, "
                                              f"or type an address in {instance.host}/...")
        else:
            self.fields["image"].help_text = (f"{instance.name} has no accelerated image yet (convert one from the "
                                              f"Jobs page); you can still type an address in {instance.host}/...")

    def _chosen_instance(self) -> Instance | None:
        chosen = self.data.get("instance") if self.is_bound else self.initial.get("instance")
        if isinstance(chosen, Instance):
            return chosen
        return Instance.objects.filter(pk=chosen).first() if str(chosen or "").isdigit() else None

    def clean(self):
        cleaned = super().clean()
        instance, image = cleaned.get("instance"), cleaned.get("image")
        if instance and image:
            try:
                cleaned["reference"] = image_of_instance(instance, image)
            except ValidationError as error:
                self.add_error("image", error)
        cluster, namespace = cleaned.get("cluster"), cleaned.get("namespace")
        if cluster and namespace and namespace_refusal(cluster, namespace):
            self.add_error("namespace", namespace_refusal(cluster, namespace))
        if cleaned.get("replicas") is not None and cleaned["replicas"] > 1000:
            self.add_error("replicas", "At most 1000 replicas.")
        return cleaned
