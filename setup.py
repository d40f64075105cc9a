"""campus-mfa: off-campus TOTP second factor for PAM, with an enrollment site.

The Debian packages (packaging/debian) are the supported installation; this file lets a
developer `pip install -e .` into a virtual environment.
"""
from setuptools import setup

setup(
    name="campus-mfa",
    version="0.1.0",
    description="Off-campus TOTP second factor for PAM, with an enrollment site",
    license="MIT",
    python_requires=">=3.11",
    # devtools/ (throwaway slapd, demo, test helpers) is not installed; ldap/ is data for
    # the directory's admin (packaging/debian installs it in /usr/share/campus-mfa/ldap).
    packages=["policy", "policy.rules", "policy.directory", "policy.authd", "policy.admin",
              "pam_module", "enroll_web"],
    package_data={
        "enroll_web": ["templates/*.html", "static/*"],
    },
    install_requires=[
        # The versions Debian 12 ships; the .deb depends on Debian's packages instead.
        "pyotp>=2.6", "ldap3>=2.9", "netaddr>=0.8", "qrcode>=7.4",
        "Flask>=2.2", "Flask-WTF>=1.1", "Flask-Limiter>=3.3", "cachelib>=0.9",
        # enroll_web/sessions.py uses its session class and id signer as 0.3 has them.
        "Flask-Session>=0.3.2,<0.5",
    ],
    entry_points={"console_scripts": ["campus-mfa = policy.admin.cli:main"]},
)
