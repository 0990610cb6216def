"""/users: administrators manage users (create, list, change role or status); a user reads their own record and
asks for their own Telegram link code. No response carries a password hash."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import AuthPrincipal, Principal, State, require
from api.errors import ApiError, ErrorBody
from api.permissions import Permission
from api.schemas.users import LinkCodePublic, UserCreate, UserPage, UserPublic, UserRole, UserStatus, UserUpdate
from api.services import auth as service
from api.services.auth import UserRecord

router = APIRouter(prefix="/users", tags=["users"])

Admin = Annotated[AuthPrincipal, require(Permission.USERS_MANAGE)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No user has this id"}}


def _public(record: UserRecord) -> UserPublic:
    return UserPublic.model_validate(record.public())


def _self_or_admin(principal: AuthPrincipal, user_id: UUID) -> None:
    """Administrators reach every user; anyone else only themself (before any lookup, so nothing leaks)."""
    if principal.can(Permission.USERS_MANAGE):
        return
    if principal.is_service or principal.user_id != str(user_id):
        raise ApiError(403, "forbidden", "you can only reach your own user")


async def _existing(state: State, user_id: UUID) -> UserRecord:
    record = await service.get_user(state, str(user_id))
    if record is None:
        raise ApiError(404, "user_not_found", "no user has this id")
    return record


@router.post(
    "",
    response_model=UserPublic,
    status_code=201,
    summary="Create a user (admins)",
    responses={409: {"model": ErrorBody, "description": "The username is taken"}},
)
async def create_user(body: UserCreate, state: State, admin: Admin) -> UserPublic:
    created = await service.create_user(
        state, username=body.username, role=body.role, password=body.password, by_user_id=admin.user_id
    )
    return _public(created)


@router.get("", response_model=UserPage, summary="List users, oldest first (admins)")
async def list_users(
    state: State,
    _admin: Admin,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    role: UserRole | None = None,
    status: UserStatus | None = None,
) -> UserPage:
    records, total = await service.list_users(state, limit=limit, offset=offset, role=role, status=status)
    return UserPage(items=[_public(r) for r in records], total=total, limit=limit, offset=offset)


@router.get(
    "/{user_id}", response_model=UserPublic, summary="One user (admins, or the user themself)", responses=_NOT_FOUND
)
async def get_user(user_id: UUID, state: State, principal: Principal) -> UserPublic:
    _self_or_admin(principal, user_id)
    return _public(await _existing(state, user_id))


@router.patch(
    "/{user_id}",
    response_model=UserPublic,
    summary="Change a user's role, status or password (admins)",
    description="A new role or status ends the user's access tokens at once (refresh answers with the new role, "
    "or refuses a user no longer active); a new password ends every session of the user (access and refresh "
    "tokens). An administrator cannot change their own role or status.",
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorBody, "description": "An administrator tried to change their own role or status"},
    },
)
async def update_user(user_id: UUID, body: UserUpdate, state: State, admin: Admin) -> UserPublic:
    if admin.user_id == str(user_id) and (body.role is not None or body.status is not None):
        # keeps the last administrator from locking everyone out by accident
        raise ApiError(409, "own_role_or_status", "another administrator must change your role or status")
    record = await service.update_user(
        state, str(user_id), role=body.role, status=body.status, password=body.password, by_user_id=admin.user_id
    )
    if record is None:
        raise ApiError(404, "user_not_found", "no user has this id")
    return _public(record)


@router.post(
    "/{user_id}/telegram-link-code",
    response_model=LinkCodePublic,
    status_code=201,
    summary="A one-time code that links a Telegram account to this user (admins, or the user themself)",
    description="Send the code to the Telegram bot within `expires_in` seconds; asking again replaces the code.",
    responses=_NOT_FOUND,
)
async def create_link_code(user_id: UUID, state: State, principal: Principal) -> LinkCodePublic:
    _self_or_admin(principal, user_id)
    record = await _existing(state, user_id)
    code, ttl = await service.issue_link_code(state, record.id)
    return LinkCodePublic(code=code, expires_in=ttl)
