"""Who may use the app: the login (none, a shared password, or OIDC), a limit on wrong passwords, and a refusal
to serve everyone on a network address with no login unless the operator chose it (``ui.allow_open_network``).

``make run`` and ``.streamlit/config.toml`` bind the app to 127.0.0.1: only this machine can reach it until the
operator picks a network address (``make run ADDRESS=0.0.0.0``), and then a login or an explicit opt-in.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Callable

import streamlit as st

from chatbot.api_guard import is_loopback
from chatbot.settings import Settings

log = logging.getLogger(__name__)


def client_group(address: str | None) -> str:
    """Whom wrong passwords are counted against: an IPv4 address, or the /64 network of an IPv6 one (one
    machine is usually given a whole /64, and could otherwise take a new address for every guess)."""
    if not address:
        return "unknown address"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """Counts wrong passwords per client (:func:`client_group`): after ``max_failures`` within ``lockout``
    seconds the client is refused, without checking the password, until ``lockout`` seconds after its last
    failure. Clients with no failure left within ``lockout`` are forgotten, so the count cannot grow without
    bound."""

    def __init__(
        self, max_failures: int, lockout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures, self.lockout, self.clock = max_failures, lockout, clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, who: str) -> list[float]:
        now = self.clock()
        kept = [t for t in self._failures.get(who, []) if now - t < self.lockout]
        self._failures[who] = kept
        return kept

    def wait(self, who: str) -> float:
        """Seconds ``who`` must wait before trying again (0: may try now)."""
        with self._lock:
            recent = self._recent(who)
            if len(recent) < self.max_failures:
                return 0.0
            return max(0.0, recent[-1] + self.lockout - self.clock())

    def failed(self, who: str) -> None:
        with self._lock:
            self._recent(who).append(self.clock())
            now = self.clock()
            for other in [
                k for k, times in self._failures.items() if not times or now - times[-1] >= self.lockout
            ]:
                del self._failures[other]

    def counted(self) -> int:
        """How many clients have failures on record."""
        with self._lock:
            return len(self._failures)

    def succeeded(self, who: str) -> None:
        with self._lock:
            self._failures.pop(who, None)


@st.cache_resource(show_spinner=False)
def login_throttle(max_failures: int, lockout: float) -> LoginThrottle:
    """One throttle per server process, shared by every session (a new session is not a new chance)."""
    return LoginThrottle(max_failures, lockout)


def served_address() -> str:
    """The address Streamlit listens on; unset means every interface."""
    return str(st.get_option("server.address") or "")


def exposure_gate(settings: Settings, t: Callable[[str], str]) -> bool:
    """False (and an explanation on the page) when the app is on a network address with no login and the
    operator has not allowed it; a warning when they have."""
    address = served_address()
    if settings.ui.auth != "none" or is_loopback(address):
        return True
    where = address or "every network interface"
    if not settings.ui.allow_open_network:
        log.error("app served on %s with ui.auth = 'none': refusing to show it", where)
        st.error(t("open_network_refused").format(where=where))
        return False
    st.sidebar.warning(t("open_network_warning").format(where=where))
    return True


def login_gate(settings: Settings, t: Callable[[str], str]) -> bool:
    """True when the user may see the app; otherwise shows the login form and returns False."""
    if settings.ui.auth == "none":
        return True
    if settings.ui.auth == "oidc":
        if getattr(st.user, "is_logged_in", False):
            st.sidebar.button(t("log_out"), on_click=st.logout)
            return True
        st.button(
            t("log_in"),
            on_click=st.login,
            args=(settings.ui.oidc_provider,) if settings.ui.oidc_provider else (),
        )
        return False
    if st.session_state.get("authenticated"):
        return True
    throttle = login_throttle(settings.ui.login_max_failures, settings.ui.login_lockout)
    address = st.context.ip_address  # None when Streamlit cannot tell (then all such clients share a count)
    who = client_group(address if isinstance(address, str) else None)
    with st.form("login"):
        attempt = st.text_input(t("password"), type="password")
        submitted = st.form_submit_button(t("log_in"))
    if not submitted:
        return False
    if wait := throttle.wait(who):
        st.error(t("too_many_attempts").format(seconds=int(wait) + 1))
        return False
    expected = settings.ui.password.get_secret_value() if settings.ui.password else ""
    if hmac.compare_digest(attempt.encode(), expected.encode()):
        throttle.succeeded(who)
        st.session_state.authenticated = True
        st.rerun()
    throttle.failed(who)
    log.warning("wrong password from %s", who)
    st.error(t("wrong_password"))
    return False
