//! [`MeteredKms`]: a [`KeyService`] that passes every call to another and records it in a
//! [`KmsMeter`] (operation, latency, failure).

use super::KmsMeter;
use crate::crypto::SecretBytes;
use crate::kms::{
    Applied, DataKey, DataKeySpec, KeyService, KmsError, KmsKey, RotationConfig, RotationEntry,
    wire,
};
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;
use uuid::Uuid;

/// A KMS whose calls are counted and timed.
pub struct MeteredKms {
    inner: Arc<dyn KeyService>,
    meter: Arc<KmsMeter>,
}

impl MeteredKms {
    /// `inner`, recording into `meter`.
    pub fn new(inner: Arc<dyn KeyService>, meter: Arc<KmsMeter>) -> Self {
        MeteredKms { inner, meter }
    }

    /// Runs `call` as operation `op` (an id of [`super::KMS_OPERATIONS`]) and records it.
    fn timed<T>(
        &self,
        op: &'static str,
        call: impl FnOnce(&dyn KeyService) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let started = Instant::now();
        let result = call(&*self.inner);
        self.meter.record(op, started.elapsed(), result.is_err());
        result
    }
}

impl KeyService for MeteredKms {
    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError> {
        self.timed("create-kms-key", |k| k.create_key(request))
    }

    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError> {
        self.timed("list-kms-keys", |k| k.list_keys())
    }

    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.timed("get-kms-key", |k| k.get_key(id))
    }

    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.timed("rotate-kms-key", |k| k.rotate_key(id))
    }

    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.timed("enable-kms-key", |k| k.enable_key(id))
    }

    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.timed("disable-kms-key", |k| k.disable_key(id))
    }

    fn enable_rotation(&self, id: Uuid, days: Option<i64>) -> Result<RotationConfig, KmsError> {
        self.timed("enable-kms-key-rotation", |k| k.enable_rotation(id, days))
    }

    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.timed("disable-kms-key-rotation", |k| k.disable_rotation(id))
    }

    fn schedule_deletion(&self, id: Uuid, days: Option<i64>) -> Result<OffsetDateTime, KmsError> {
        self.timed("schedule-kms-key-deletion", |k| {
            k.schedule_deletion(id, days)
        })
    }

    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.timed("cancel-kms-key-deletion", |k| k.cancel_deletion(id))
    }

    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError> {
        self.timed("list-kms-key-rotations", |k| k.list_rotations(id))
    }

    fn encrypt(&self, id: Uuid, plain: &[u8], ctx: Option<&[u8]>) -> Result<Vec<u8>, KmsError> {
        self.timed("encrypt", |k| k.encrypt(id, plain, ctx))
    }

    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError> {
        self.timed("decrypt", |k| k.decrypt(id, ciphertext, ctx))
    }

    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        ctx: Option<&[u8]>,
    ) -> Result<DataKey, KmsError> {
        self.timed("generate-data-key", |k| k.generate_data_key(id, spec, ctx))
    }

    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_ctx: Option<&[u8]>,
        destination: Uuid,
        destination_ctx: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        self.timed("re-encrypt", |k| {
            k.re_encrypt(source, ciphertext, source_ctx, destination, destination_ctx)
        })
    }

    fn housekeeping(&self) -> Result<Option<String>, KmsError> {
        self.timed("housekeeping", |k| k.housekeeping())
    }

    fn release_connections(&self) {
        self.inner.release_connections();
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::testing::MemoryKms;

    #[test]
    fn every_call_is_recorded_under_its_operation_id() {
        let meter = Arc::new(KmsMeter::default());
        let kms = MeteredKms::new(Arc::new(MemoryKms::new()), meter.clone());
        let missing = Uuid::new_v4();
        assert!(kms.get_key(missing).is_err());
        let _ = kms.list_keys();
        let _ = kms.housekeeping();
        let snap = meter.snapshot();
        let named: Vec<(&str, u64, u64)> = snap
            .iter()
            .map(|s| (s.operation.as_str(), s.calls, s.errors))
            .collect();
        assert_eq!(
            named,
            vec![
                ("list-kms-keys", 1, 0),
                ("get-kms-key", 1, 1),
                ("housekeeping", 1, 0)
            ]
        );
    }

    #[test]
    fn every_operation_id_is_one_the_meter_knows() {
        let meter = Arc::new(KmsMeter::default());
        let kms = MeteredKms::new(Arc::new(MemoryKms::new()), meter.clone());
        let request: wire::CreateKeyRequest =
            serde_json::from_value(serde_json::json!({"name": "k"})).expect("request");
        let id = kms.create_key(&request).map(|k| k.id).unwrap_or_default();
        let _ = kms.list_keys();
        let _ = kms.get_key(id);
        let _ = kms.rotate_key(id);
        let _ = kms.enable_key(id);
        let _ = kms.disable_key(id);
        let _ = kms.enable_rotation(id, None);
        let _ = kms.disable_rotation(id);
        let _ = kms.schedule_deletion(id, None);
        let _ = kms.cancel_deletion(id);
        let _ = kms.list_rotations(id);
        let _ = kms.encrypt(id, b"x", None);
        let _ = kms.decrypt(id, b"x", None);
        let _ = kms.generate_data_key(id, DataKeySpec::Aes256, None);
        let _ = kms.re_encrypt(id, b"x", None, id, None);
        let _ = kms.housekeeping();
        let recorded: Vec<String> = meter.snapshot().into_iter().map(|s| s.operation).collect();
        assert_eq!(recorded, crate::fs::stats::KMS_OPERATIONS);
    }
}
