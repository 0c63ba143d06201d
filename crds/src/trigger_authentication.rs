//! `TriggerAuthentication` and `ClusterTriggerAuthentication`: where a trigger's credentials come
//! from. Both kinds share one spec; the cluster kind reads Secrets and ConfigMaps from ebb's own
//! namespace.
//!
//! Every provider in KEDA's schema is accepted so that existing objects are stored intact; the
//! ones ebb does not implement are reported as unsupported by the controller.

// clippy reads the repeated `type_ = ...` keys of separate `printcolumn(...)` entries in one
// `#[kube(...)]` as duplicated attributes; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Credential sources for triggers.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    plural = "triggerauthentications",
    namespaced,
    status = "TriggerAuthenticationStatus",
    shortname = "ta",
    shortname = "triggerauth",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(
        name = "VaultAddress",
        type_ = "string",
        json_path = ".spec.hashiCorpVault.address"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        json_path = ".status.scaledobjects",
        priority = "1"
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        json_path = ".status.scaledjobs",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Platform identity of the workload or of ebb (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// Parameters read from keys of Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_target_ref: Option<Vec<AuthTargetRef>>,
    /// Parameters read from keys of ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_target_ref: Option<Vec<AuthTargetRef>>,
    /// Parameters read from environment variables of the scale target's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<AuthEnvironment>>,
    /// HashiCorp Vault (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashi_corp_vault: Option<HashiCorpVault>,
    /// Azure Key Vault (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_vault: Option<AzureKeyVault>,
    /// Google Cloud Secret Manager (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_secret_manager: Option<GcpSecretManager>,
    /// AWS Secrets Manager (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_manager: Option<AwsSecretManager>,
    /// Bound service-account tokens as parameters: a TokenRequest for each service account, in
    /// the ScaledObject's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_service_account_token: Option<Vec<BoundServiceAccountToken>>,
    /// A JSON file of parameters (an object of strings) in ebb's pod, relative to
    /// `--filepath-auth-root-path`; ClusterTriggerAuthentications only, as in KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// OAuth2 client-credentials flow (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
    /// Microsoft Entra service principal (not implemented by ebb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_service_principal: Option<AzureServicePrincipal>,
}

/// The cluster-scoped kind: the same spec, Secrets and ConfigMaps read from ebb's namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    plural = "clustertriggerauthentications",
    status = "TriggerAuthenticationStatus",
    shortname = "cta",
    shortname = "clustertriggerauth",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(name = "FilePath", type_ = "string", json_path = ".spec.filePath"),
    printcolumn(
        name = "VaultAddress",
        type_ = "string",
        json_path = ".spec.hashiCorpVault.address"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        json_path = ".status.scaledobjects",
        priority = "1"
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        json_path = ".status.scaledjobs",
        priority = "1"
    )
)]
pub struct ClusterTriggerAuthenticationSpec {
    /// The shared spec, flattened so both kinds have one schema.
    #[serde(flatten)]
    pub auth: TriggerAuthenticationSpec,
}

impl std::ops::Deref for ClusterTriggerAuthenticationSpec {
    type Target = TriggerAuthenticationSpec;
    fn deref(&self) -> &TriggerAuthenticationSpec {
        &self.auth
    }
}

impl TriggerAuthenticationSpec {
    /// The providers present in this spec that ebb does not implement, by field name.
    pub fn unsupported_providers(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if self
            .pod_identity
            .as_ref()
            .is_some_and(|p| p.provider != "none")
        {
            found.push("podIdentity");
        }
        let present = [
            (self.hashi_corp_vault.is_some(), "hashiCorpVault"),
            (self.azure_key_vault.is_some(), "azureKeyVault"),
            (self.gcp_secret_manager.is_some(), "gcpSecretManager"),
            (self.aws_secret_manager.is_some(), "awsSecretManager"),
            (self.oauth2.is_some(), "oauth2"),
            (
                self.azure_service_principal.is_some(),
                "azureServicePrincipal",
            ),
        ];
        found.extend(present.iter().filter(|(p, _)| *p).map(|(_, n)| *n));
        found
    }
}

/// Which objects use this authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerAuthenticationStatus {
    /// Comma-separated names of the ScaledObjects using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    /// Comma-separated names of the ScaledJobs using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
}

/// Platform-native identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthPodIdentity {
    /// `azure-workload`, `gcp`, `aws`, `aws-eks` or `none`.
    #[schemars(extend("enum" = ["azure-workload", "gcp", "aws", "aws-eks", "none"]))]
    pub provider: String,
    /// Azure identity (client) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// Azure tenant id override; requires identityId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_tenant_id: Option<String>,
    /// Azure authority host override; requires identityTenantId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_authority_host: Option<String>,
    /// AWS role to assume; excludes identityOwner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `keda` or `workload`: whose identity AWS auto-discovery uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["keda", "workload"]))]
    pub identity_owner: Option<String>,
    /// External id used when assuming roleArn.
    #[serde(
        rename = "externalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
}

/// One parameter read from a key of a Secret or ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthTargetRef {
    /// Trigger parameter the value fills, e.g. `password`.
    pub parameter: String,
    /// Name of the Secret or ConfigMap.
    pub name: String,
    /// Key inside it.
    pub key: String,
}

/// One parameter read from an environment variable of the scale target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    /// Trigger parameter the value fills.
    pub parameter: String,
    /// Environment variable name.
    pub name: String,
    /// Container to read from (default: the target's first container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// HashiCorp Vault source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HashiCorpVault {
    /// Vault address.
    pub address: String,
    /// `token` or `kubernetes`.
    #[schemars(extend("enum" = ["token", "kubernetes"]))]
    pub authentication: String,
    /// Vault Enterprise namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Vault role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Auth mount path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Credentials for the chosen authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<VaultCredential>,
    /// Secrets to read.
    #[schemars(length(min = 1))]
    pub secrets: Vec<VaultSecret>,
}

/// Vault credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultCredential {
    /// Vault token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Path of a service-account token file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Service account whose bound token is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// One secret read from Vault.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecret {
    /// Trigger parameter the value fills.
    pub parameter: String,
    /// Secret path.
    pub path: String,
    /// Key inside the secret.
    pub key: String,
    /// `secretV2`, `secret`, `pki` or empty.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "secretV2", "secret", "pki"]))]
    pub type_: Option<String>,
    /// PKI certificate request, for `pki` secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki_data: Option<VaultPkiData>,
}

/// Vault PKI request fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultPkiData {
    /// Common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_names: Option<String>,
    /// IP SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_sans: Option<String>,
    /// URI SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_sans: Option<String>,
    /// Other SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_sans: Option<String>,
    /// Certificate TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Certificate format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A value taken from a Secret key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFromSecret {
    /// Where the value comes from.
    pub value_from: ValueFromSource,
}

/// Source of a [`ValueFromSecret`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFromSource {
    /// The Secret key.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

/// Azure Key Vault source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVault {
    /// Vault URI.
    pub vault_uri: String,
    /// Service principal credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AzureKeyVaultCredentials>,
    /// Pod identity used instead of credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// Cloud environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<AzureKeyVaultCloudInfo>,
    /// Secrets to read.
    #[schemars(length(min = 1))]
    pub secrets: Vec<AzureKeyVaultSecret>,
}

/// Azure service principal credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultCredentials {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: ValueFromSecret,
    /// Tenant id.
    pub tenant_id: String,
}

/// Azure cloud selection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultCloudInfo {
    /// Cloud name, e.g. `AzurePublicCloud` or `Private`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Key Vault resource URL for a private cloud.
    #[serde(
        rename = "keyVaultResourceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub key_vault_resource_url: Option<String>,
    /// Active Directory endpoint for a private cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_directory_endpoint: Option<String>,
}

/// One Azure Key Vault secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AzureKeyVaultSecret {
    /// Trigger parameter the value fills.
    pub parameter: String,
    /// Secret name.
    pub name: String,
    /// Secret version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Google Cloud Secret Manager source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSecretManager {
    /// Secrets to read.
    #[schemars(length(min = 1))]
    pub secrets: Vec<GcpSecretManagerSecret>,
    /// Service account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GcpCredentials>,
    /// Pod identity used instead of credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
}

/// GCP credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentials {
    /// Service account key JSON.
    pub client_secret: ValueFromSecret,
}

/// One GCP secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GcpSecretManagerSecret {
    /// Trigger parameter the value fills.
    pub parameter: String,
    /// Secret id.
    pub id: String,
    /// Secret version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// AWS Secrets Manager source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManager {
    /// Secrets to read.
    #[schemars(length(min = 1))]
    pub secrets: Vec<AwsSecretManagerSecret>,
    /// Static credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentials>,
    /// Pod identity used instead of credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// AWS static credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key: ValueFromSecret,
    /// Secret access key.
    pub access_secret_key: ValueFromSecret,
    /// Session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<ValueFromSecret>,
}

/// One AWS secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManagerSecret {
    /// Trigger parameter the value fills.
    pub parameter: String,
    /// Secret name or ARN.
    pub name: String,
    /// Version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Version stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// Key inside a key/value secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// A bound service-account token as a parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoundServiceAccountToken {
    /// Trigger parameter the token fills.
    pub parameter: String,
    /// Service account in the ScaledObject's namespace.
    pub service_account_name: String,
}

/// OAuth2 client-credentials source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2 {
    /// Grant type; only `clientCredentials`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["clientCredentials"], "default" = "clientCredentials"))]
    pub type_: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ValueFromSecret>,
    /// Token endpoint.
    pub token_url: String,
    /// Requested scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Extra token request parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url_params: Option<BTreeMap<String, String>>,
}

/// Microsoft Entra service principal (KEDA 2.21).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureServicePrincipal {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ValueFromSecret>,
    /// Client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ValueFromSecret>,
    /// Password of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_password: Option<ValueFromSecret>,
    /// Cloud name (default AzurePublicCloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// Active Directory endpoint, for a private cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_directory_endpoint: Option<String>,
}
