"""Names the exporter, the server and the client share: one place for each.

The networks in the model repository and their tensors, the front door's one input and output,
the request parameters it reads, the media types of the hosted service, and the default limits
a client needs to know to pack requests the server will take.
"""

# Models in the repository.
FRONT_DOOR = "object2vec"
ENCODER_MODELS = ("enc0", "enc1")
PAIR_MODEL = "pair"

# Tensors of the exported graphs.
ENCODER_INPUT = "tokens"
ENCODER_OUTPUT = "embedding"
PAIR_INPUTS = ("in0", "in1")
PAIR_OUTPUT = "scores"

# The front door: one BYTES input holding the body, one BYTES output holding the answer.
BODY_INPUT = "body"
RESPONSE_OUTPUT = "response"

# The request parameters the front door reads (KServe `parameters`, gRPC or HTTP); no others.
CONTENT_TYPE_PARAMETER = "content_type"
ACCEPT_PARAMETER = "accept"
PARAMETERS = (CONTENT_TYPE_PARAMETER, ACCEPT_PARAMETER)

# The hosted service's media types, in and out.
JSON = "application/json"
JSONLINES = "application/jsonlines"

# Instances in one request, all bodies together. The hosted real-time endpoint takes at most
# 6 MB a request; this bounds one request's front-door time (docs/robustness.md). Clients
# pack Batch Transform requests under it.
DEFAULT_MAX_INSTANCES = 10_000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
