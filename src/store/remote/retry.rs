//! Retrying requests to S3: object_store's own policy ([`policy`]), and [`Persistent`], which
//! tries again what object_store gives up on at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutOptions, PutPayload, PutResult};

/// An S3 store whose requests are tried again where object_store gives up at once: conditional
/// puts (create-if-absent, update-if-unchanged), which it cannot know to be idempotent, and
/// requests that failed on a pooled connection the peer had closed ("connection was not
/// ready"), which its error classifier does not recognise. Only fast failures are tried again:
/// one that took a second or more has been through object_store's own retries with backoff,
/// and a remote that is down should cost seconds, not minutes. A conditional put tried again
/// may find its own first attempt in place; callers resolve that (see [`Remote::claim`]).
#[derive(Debug)]
pub(super) struct Persistent(Arc<dyn ObjectStore>);

/// Attempts after the first, and the pause before the first of them (doubling).
const AGAIN: u32 = 3;
const AGAIN_AFTER: Duration = Duration::from_millis(100);

impl Persistent {
    pub(super) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self(inner)
    }

    async fn again<T, Fut: std::future::Future<Output = object_store::Result<T>>>(
        mut request: impl FnMut() -> Fut,
    ) -> object_store::Result<T> {
        let mut pause = AGAIN_AFTER;
        for _ in 0..AGAIN {
            let started = Instant::now();
            match request().await {
                Err(object_store::Error::Generic { .. }) if started.elapsed() < Duration::from_secs(1) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                done => return done,
            }
        }
        request().await
    }
}

impl std::fmt::Display for Persistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Persistent {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Self::again(|| self.0.put_opts(location, payload.clone(), opts.clone())).await
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        Self::again(|| self.0.get_opts(location, options.clone())).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// Each request is retried up to 6 times with exponential backoff (0.1 s doubling, at most 5 s
/// apart): transient faults are ridden out, while a remote that is down costs a stage about
/// 6 s before it runs here instead (object_store's default would wait up to 3 minutes).
pub(super) fn policy() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(60),
    }
}
