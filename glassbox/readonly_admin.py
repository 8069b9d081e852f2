"""The base of every domain model's admin page: read-only.

Support staff look rows up in the Django admin; they never change them there.
Every change goes through a service (rules checked, an audit event in the same
transaction), and an admin form would be a way around both. So these pages
list, filter, search and open rows, and refuse add, change and delete - for
superusers too. The admin site itself already lets in staff users only; a
staff user also needs the model's view permission, a superuser has them all.
"""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    actions = None
    # Counting a large table (the audit trail) on every page costs more than it tells.
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]
