"""The interpreter floor: a pam_python module that loads nothing and says yes.

campus-mfa's costs are reported as ratios to this (bench/logins.py).
"""


def pam_sm_authenticate(pamh, flags, argv):
    return pamh.PAM_SUCCESS


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_SUCCESS
