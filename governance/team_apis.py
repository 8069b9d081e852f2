"""REST API of teams: one view per operation, no rules here
(governance/team_services.py and team_selectors.py hold them)."""

from django.db.models import F
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.pagination import CursorPage, paginated_response
from governance import team_selectors, team_services
from governance.models import Team, TeamMembership


class MemberOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = TeamMembership
        fields = ["username", "role", "created_at"]


class TeamOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["name", "created_at"]


class TeamDetailOutputSerializer(TeamOutputSerializer):
    members = MemberOutputSerializer(many=True, source="member_list")

    class Meta(TeamOutputSerializer.Meta):
        fields = TeamOutputSerializer.Meta.fields + ["members"]


class TeamListCreateApi(APIView):
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TeamCreateRequest"

        name = serializers.CharField(max_length=100)

    @extend_schema(
        responses=TeamOutputSerializer(many=True),
        operation_id="teams_list",
        description="The teams the caller belongs to; managers and admins see every team.",
    )
    def get(self, request):
        teams = team_selectors.team_list(user=request.user)
        return paginated_response(request, teams, TeamOutputSerializer, ordering="name", view=self)

    @extend_schema(
        request=InputSerializer,
        responses={201: TeamOutputSerializer},
        operation_id="teams_create",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = team_services.team_create(actor=request.user, **data.validated_data)
        return Response(TeamOutputSerializer(team).data, status=status.HTTP_201_CREATED)


def _detail(team: Team) -> dict:
    team.member_list = team_selectors.team_members(team)
    return TeamDetailOutputSerializer(team).data


class TeamDetailApi(APIView):
    @extend_schema(responses=TeamDetailOutputSerializer, operation_id="teams_retrieve")
    def get(self, request, name: str):
        return Response(_detail(team_selectors.team_get(user=request.user, name=name)))


class TeamMemberListCreateApi(APIView):
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TeamMemberRequest"

        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=TeamMembership.Role.choices)

    @extend_schema(responses=MemberOutputSerializer(many=True), operation_id="teams_members_list")
    def get(self, request, name: str):
        team = team_selectors.team_get(user=request.user, name=name)
        # The cursor's position is a field of the row itself: the username, copied on.
        members = team_selectors.team_members(team).annotate(member_username=F("user__username"))
        return paginated_response(request, members, MemberOutputSerializer, ordering="member_username", view=self)

    @extend_schema(
        request=InputSerializer,
        responses={200: MemberOutputSerializer, 201: MemberOutputSerializer},
        operation_id="teams_members_set",
        description="Add a member, or change a member's role: the team's maintainers and admins. "
        "A team keeps at least one maintainer (409, code last_maintainer).",
    )
    def post(self, request, name: str):
        team = team_selectors.team_get(user=request.user, name=name)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership, created = team_services.team_member_set(actor=request.user, team=team, **data.validated_data)
        return Response(
            MemberOutputSerializer(membership).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class TeamMemberDetailApi(APIView):
    @extend_schema(
        responses={204: None},
        operation_id="teams_members_destroy",
        description="Remove a member: the team's maintainers and admins. The last maintainer stays (409).",
    )
    def delete(self, request, name: str, username: str):
        team = team_selectors.team_get(user=request.user, name=name)
        team_services.team_member_remove(actor=request.user, team=team, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)
