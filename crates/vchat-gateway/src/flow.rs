//! The Flow runtime: the executors of a Flow, run in order for each request.

use std::sync::Arc;

use vchat_core::config::FlowSpec;
use vchat_core::{
    ConfigError, DocumentArray, Error, Executor, Registry, RequestContext, StreamId,
    parameters_for, serves,
};
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::status_proto::{ExceptionProto, StatusCode};
use vchat_proto::{DataRequestProto, HeaderProto, StatusProto};

/// One executor of a running Flow.
pub struct Node {
    name: String,
    endpoints: Vec<String>,
    executor: Arc<dyn Executor>,
}

impl Node {
    /// A node named `name` running `executor`.
    pub fn new(name: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        Node {
            name: name.into(),
            endpoints: executor.endpoints(),
            executor,
        }
    }

    /// The executor's name in the Flow.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The executors of a Flow, in the order they run.
pub struct FlowRuntime {
    nodes: Vec<Node>,
    names: Vec<String>,
}

impl FlowRuntime {
    /// A Flow of `nodes`, run in order.
    pub fn new(nodes: Vec<Node>) -> Self {
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        FlowRuntime { nodes, names }
    }

    /// Builds every executor `spec` names from `registry`.
    pub fn build(spec: &FlowSpec, registry: &Registry) -> Result<Self, ConfigError> {
        let nodes = spec
            .executors
            .iter()
            .map(|e| Ok(Node::new(e.name.clone(), registry.build(e)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(FlowRuntime::new(nodes))
    }

    /// The executors, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Processes one request and returns its response, which carries the same
    /// `request_id` and an ERROR status if anything failed.
    pub async fn process(&self, mut req: DataRequestProto, stream: StreamId) -> DataRequestProto {
        let mut header = req.header.take().unwrap_or_default();
        let docs = match req.data.take().and_then(|d| d.documents) {
            None => Ok(DocumentArray::new()),
            Some(Documents::Docs(da)) => DocumentArray::from_proto(da),
            Some(Documents::DocsBytes(_)) => Err(Error::BadRequest(
                "data.docs_bytes (pickled documents) is not supported: send data.docs".into(),
            )),
        };
        let mut docs = match docs {
            Ok(d) => d,
            Err(e) => {
                header.status = Some(error_status(&e));
                req.header = Some(header);
                return req;
            }
        };
        if let Err(e) = self.run(&mut docs, &header, &req, stream).await {
            header.status = Some(error_status(&e));
        }
        req.header = Some(header);
        req.data = Some(DataContentProto {
            documents: Some(Documents::Docs(docs.into_proto())),
        });
        req
    }

    async fn run(
        &self,
        docs: &mut DocumentArray,
        header: &HeaderProto,
        req: &DataRequestProto,
        stream: StreamId,
    ) -> Result<(), Error> {
        let endpoint = header.exec_endpoint.as_deref().unwrap_or("/");
        let target = match header.target_executor.as_deref() {
            None | Some("") => None,
            Some(pattern) => Some(regex::Regex::new(&format!("^(?:{pattern})")).map_err(|e| {
                Error::BadRequest(format!("header.target_executor is not a valid regex: {e}"))
            })?),
        };
        let empty = Default::default();
        let params = req.parameters.as_ref().map_or(&empty, |p| &p.fields);
        for node in &self.nodes {
            if target.as_ref().is_some_and(|t| !t.is_match(&node.name))
                || !serves(&node.endpoints, endpoint)
            {
                continue;
            }
            let merged = parameters_for(params, &node.name, &self.names);
            let ctx = RequestContext {
                endpoint,
                parameters: &merged,
                stream,
                request_id: &header.request_id,
            };
            node.executor.process(docs, &ctx).await?;
        }
        Ok(())
    }

    /// Tells every executor that `stream` ended.
    pub async fn stream_closed(&self, stream: StreamId) {
        for node in &self.nodes {
            node.executor.stream_closed(stream).await;
        }
    }
}

/// The ERROR status Jina's client reports for `e`.
pub fn error_status(e: &Error) -> StatusProto {
    let description = e.to_string();
    StatusProto {
        code: StatusCode::Error as i32,
        exception: Some(ExceptionProto {
            name: e.name().to_string(),
            args: vec![description.clone()],
            stacks: Vec::new(),
            executor: e.executor().unwrap_or_default().to_string(),
        }),
        description,
    }
}

/// The response to a request that was not processed: its header with `e`.
pub fn error_response(mut header: HeaderProto, e: &Error) -> DataRequestProto {
    header.status = Some(error_status(e));
    DataRequestProto {
        header: Some(header),
        ..Default::default()
    }
}
