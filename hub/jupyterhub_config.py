"""JupyterHub for the course (docs/jupyterhub.md): ``jupyterhub -f hub/jupyterhub_config.py``, as root.

Every student logs in as a system user and gets a single-user JupyterLab spawned as that user
(LocalProcessSpawner) from the *students'* Python environment: the pinned packages (torch, jupyterlab,
nbgrader with its Assignments tab) without the project, whose checkout only the instructor can read. Their
kernels import the ``course_lib`` of the current week from COURSE_LIB (``python -m autograder hub publish``
keeps COURSE_LIB/course_lib there), and nbgrader's exchange is COURSE_EXCHANGE (mode 1777) for the course
COURSE_ID. Everything is read from the environment, with the defaults of a real deployment:

  COURSE_HUB_IP, COURSE_HUB_PORT      where the proxy listens (default 127.0.0.1:8000; put TLS in front)
  COURSE_HUB_STATE                    the hub's database, cookie secret, proxy pid (default /srv/jupyterhub)
  COURSE_STUDENT_ENV                  the students' environment (default /opt/course-students: its bin/
                                      holds jupyterhub-singleuser)
  COURSE_LIB                          the folder holding the published course_lib (default /srv/course/lib)
  COURSE_NBGRADER_CONFIG              a folder with the students' nbgrader_config.py (exchange root and
                                      course id), put on their JUPYTER_CONFIG_PATH (default /srv/course/etc)
  COURSE_USERS                        who may log in, comma-separated (default: every system user, PAM)
  COURSE_HUB_DUMMY_PASSWORD           tests only: a shared password instead of PAM (never on a real hub)
  COURSE_HUB_API_PORT, COURSE_PROXY_API_PORT   the hub's and the proxy's own ports on 127.0.0.1 (8081, 8001)
"""
import os

c = get_config()  # noqa: F821 (provided by traitlets when jupyterhub loads this file)
env = os.environ.get

state = env("COURSE_HUB_STATE", "/srv/jupyterhub")
student_env = env("COURSE_STUDENT_ENV", "/opt/course-students")
lib = env("COURSE_LIB", "/srv/course/lib")
nbgrader_config = env("COURSE_NBGRADER_CONFIG", "/srv/course/etc")

c.JupyterHub.ip = env("COURSE_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(env("COURSE_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("COURSE_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('COURSE_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "jupyterhub-proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + os.path.join(state, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True          # stopping the hub stops the students' servers

if env("COURSE_HUB_DUMMY_PASSWORD"):
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = env("COURSE_HUB_DUMMY_PASSWORD")
if env("COURSE_USERS"):
    c.Authenticator.allowed_users = set(env("COURSE_USERS").split(","))
else:
    c.Authenticator.allow_all = True         # PAM: every system user with a password

# Each user's server: JupyterLab from the students' environment, as that user, in their home.
c.Spawner.cmd = [os.path.join(student_env, "bin", "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.args = ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
# Nothing of the hub's own environment reaches a student's server but these (no PYTHONPATH, no VIRTUAL_ENV).
c.Spawner.env_keep = ["LANG", "LC_ALL"]
c.Spawner.environment = {
    "PATH": os.path.join(student_env, "bin") + ":/usr/local/bin:/usr/bin:/bin",
    "PYTHONPATH": lib,                        # import course_lib -> this week's student copy
    "JUPYTER_CONFIG_PATH": nbgrader_config,   # nbgrader_config.py: Exchange.root, CourseDirectory.course_id
    "WANDB_MODE": "offline",
}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
