"""REST API of the data plane: predictions and feedback on them.

The predict path is kept lean: authentication, then cached routing and the
model call; the prediction log is written off the request path and no audit
event is written per prediction (rollouts/serving.py says why)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.errors import InvalidInput, NotFound
from governance.audit_actions import AuditAction
from governance.token_auth import CachedApiTokenAuthentication
from rollouts import routing, services, serving

PIN_HEADER = "X-Glassbox-Version"


class PredictionSerializer(serializers.Serializer):
    prediction_id = serializers.UUIDField(help_text="refer to it when sending feedback")
    version = serializers.IntegerField(help_text="the version that answered")
    label = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField(), help_text="label -> probability")
    confidence = serializers.FloatField(help_text="probability of the predicted label")
    route = serializers.ChoiceField(choices=["stable", "candidate", "pinned"], help_text="why this version answered")


class PredictOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    predictions = PredictionSerializer(many=True)


class PredictInputSerializer(serializers.Serializer):
    inputs = serializers.ListField(
        child=serializers.CharField(), min_length=1, help_text="texts to classify (at most 64 by default)"
    )
    key = serializers.CharField(
        required=False, max_length=200, help_text="routing key (e.g. a user id): the same key gets the same version"
    )

    class Meta:
        ref_name = "PredictInput"


class FeedbackItemSerializer(serializers.Serializer):
    prediction_id = serializers.UUIDField()
    label = serializers.CharField(help_text="the true label; one of the answering version's labels")

    class Meta:
        ref_name = "FeedbackItemInput"


class FeedbackInputSerializer(serializers.Serializer):
    items = FeedbackItemSerializer(many=True)

    class Meta:
        ref_name = "FeedbackInput"


class FeedbackOutputSerializer(serializers.Serializer):
    recorded = serializers.IntegerField()
    correct = serializers.IntegerField()
    incorrect = serializers.IntegerField()


def _pin_from(request) -> int | None:
    raw = request.headers.get(PIN_HEADER)
    if raw is None or raw == "":
        return None
    if not raw.strip().isdigit() or int(raw) < 1:
        raise InvalidInput(f"{PIN_HEADER} must be a version number.")
    return int(raw)


def _model_named(name: str):
    model = routing.cached_model(name)
    if model is None:
        raise NotFound(f"No model named {name!r}.")
    return model


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise InvalidInput("Send a JSON object.")
    return request.data


class PredictApi(APIView):
    authentication_classes = [CachedApiTokenAuthentication, SessionAuthentication]
    # Open to tokens scoped to `predict` on this model (governance/token_auth.py).
    token_scope = "predict"
    # The rules (limits, types, routing) live in serving.predict; this documents the body.
    InputSerializer = PredictInputSerializer

    @extend_schema(
        # JSON only: a form encoding cannot carry the list of texts.
        request={"application/json": InputSerializer},
        responses={200: PredictOutputSerializer, 503: OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter(
                PIN_HEADER,
                {"type": "integer", "minimum": 1},
                OpenApiParameter.HEADER,
                required=False,
                description="pin the answering version (testers with the pin permission)",
            )
        ],
        operation_id="models_predict",
    )
    def post(self, request, name: str):
        serving.require_serving_permission(request.user, name)
        model = _model_named(name)
        serving.require_model_serving_permission(request.user, model, action=AuditAction.PREDICTION_REQUEST)
        body = _body(request)
        predictions = serving.predict(
            actor=request.user,
            model=model,
            inputs=body.get("inputs"),
            key=body.get("key"),
            pin_version=_pin_from(request),
        )
        return Response({"model": model.name, "predictions": predictions})


class FeedbackApi(APIView):
    token_scope = "feedback"
    InputSerializer = FeedbackInputSerializer

    @extend_schema(
        request={"application/json": InputSerializer},
        responses={201: FeedbackOutputSerializer},
        operation_id="models_feedback",
    )
    def post(self, request, name: str):
        model = _model_named(name)
        result = services.feedback_record(actor=request.user, model=model, items=_body(request).get("items"))
        return Response(result, status=status.HTTP_201_CREATED)
