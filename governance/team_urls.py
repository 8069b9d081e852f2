from django.urls import path

from governance import team_apis

# REST API under /api/v1/ (namespace "teams-api").
api_urlpatterns = [
    path("teams/", team_apis.TeamListCreateApi.as_view(), name="teams"),
    path("teams/<str:name>/", team_apis.TeamDetailApi.as_view(), name="team"),
    path("teams/<str:name>/members/", team_apis.TeamMemberListCreateApi.as_view(), name="members"),
    path("teams/<str:name>/members/<str:username>/", team_apis.TeamMemberDetailApi.as_view(), name="member"),
]
