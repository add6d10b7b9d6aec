//! Who the image's process runs as: USER resolved the way docker (runc) does, from the image's
//! own /etc/passwd and /etc/group.
use super::tree::GuestTree;
use anyhow::{bail, Context, Result};

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The passwd name, when the user has an entry and the group (if any) has one too (systemd
    /// and OpenRC then also set the supplementary groups, HOME and SHELL from it).
    pub name: Option<String>,
    pub uid: u32,
    /// The group given after `:`, when there was one; else the user's primary group.
    pub group: Option<String>,
    pub gid: u32,
}

fn passwd_lines(guest: &mut GuestTree, file: &str) -> Result<Vec<Vec<String>>> {
    let text = guest.read(file)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

pub fn resolve(guest: &mut GuestTree, spec: &str) -> Result<RunAs> {
    let passwd = passwd_lines(guest, "/etc/passwd")?;
    let groups = passwd_lines(guest, "/etc/group")?;
    resolve_user_in(spec, &passwd, &groups)
}

/// Who a process runs as, numerically, with what `docker run` also gives it: supplementary groups
/// from the image's /etc/group and HOME from its /etc/passwd (else `/`). For c2vm-init, which
/// has no passwd lookup of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

pub fn identity(guest: &mut GuestTree, spec: &str) -> Result<Identity> {
    let passwd = passwd_lines(guest, "/etc/passwd")?;
    let groups = passwd_lines(guest, "/etc/group")?;
    identity_in(spec, &passwd, &groups)
}

fn identity_in(spec: &str, passwd: &[Vec<String>], groups: &[Vec<String>]) -> Result<Identity> {
    let who = resolve_user_in(spec, passwd, groups)?;
    let entry = who
        .name
        .as_ref()
        .and_then(|n| passwd.iter().find(|f| f.len() >= 6 && &f[0] == n));
    let home = entry
        .map(|f| f[5].clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let mut supplementary = vec![who.gid];
    if let Some(name) = &who.name {
        for g in groups.iter().filter(|f| f.len() >= 4) {
            if g[3].split(',').any(|m| m == name) {
                if let Ok(gid) = g[2].parse::<u32>() {
                    if !supplementary.contains(&gid) {
                        supplementary.push(gid);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid: who.uid,
        gid: who.gid,
        groups: supplementary,
        home,
    })
}

fn resolve_user_in(spec: &str, passwd: &[Vec<String>], groups: &[Vec<String>]) -> Result<RunAs> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // No USER is root, also in an image with no /etc/passwd at all (`FROM scratch`).
    let user_part = if user_part.is_empty()
        && passwd
            .iter()
            .any(|f| f.first().is_some_and(|n| n == "root"))
    {
        "root"
    } else if user_part.is_empty() {
        "0"
    } else {
        user_part
    };
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 4 && f[0] == user_part)
        .or_else(|| {
            user_part.parse::<u32>().ok().and_then(|uid| {
                passwd
                    .iter()
                    .find(|f| f.len() >= 4 && f[2].parse() == Ok(uid))
            })
        });
    let (name, uid, primary_gid) = match entry {
        Some(f) => (
            Some(f[0].clone()),
            f[2].parse::<u32>().with_context(|| format!("bad uid for {} in the image's /etc/passwd", f[0]))?,
            // A gid that does not parse must not quietly become 0 (the app would run as group root).
            f[3].parse::<u32>().with_context(|| format!("bad primary gid {:?} for {} in the image's /etc/passwd", f[3], f[0]))?,
        ),
        None => match user_part.parse::<u32>() {
            // docker runs a numeric uid that has no entry with gid 0.
            Ok(uid) => (None, uid, 0),
            Err(_) => bail!(
                "the image's USER {user_part} is not in its /etc/passwd, so docker could not start it either; fix USER in the image, or convert with --no-app"
            ),
        },
    };
    let (group, gid) = match group_part {
        None | Some("") => (None, primary_gid),
        Some(g) => {
            let by_name = groups.iter().find(|f| f.len() >= 3 && f[0] == g);
            let by_id = g.parse::<u32>().ok().and_then(|gid| {
                groups
                    .iter()
                    .find(|f| f.len() >= 3 && f[2].parse() == Ok(gid))
            });
            match by_name.or(by_id) {
                Some(f) => (
                    Some(f[0].clone()),
                    f[2].parse::<u32>().with_context(|| format!("bad gid for {} in the image's /etc/group", f[0]))?,
                ),
                // A numeric gid with no entry: only setpriv can run it, without a user name.
                None => match g.parse::<u32>() {
                    Ok(gid) => {
                        return Ok(RunAs {
                            name: None,
                            uid,
                            group: None,
                            gid,
                        })
                    }
                    Err(_) => bail!("the image's USER names the group {g}, which is not in its /etc/group; fix USER in the image, or convert with --no-app"),
                },
            }
        }
    };
    Ok(RunAs {
        name,
        uid,
        group,
        gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_carry_groups_and_home() {
        let passwd: Vec<Vec<String>> = ["app:x:1234:1300::/home/app:/bin/sh"]
            .iter()
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect();
        let groups: Vec<Vec<String>> = ["apps:x:1300:", "audio:x:29:app,other", "video:x:44:other"]
            .iter()
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect();
        let id = identity_in("app", &passwd, &groups).unwrap();
        assert_eq!(
            (id.uid, id.gid, id.groups.clone()),
            (1234, 1300, vec![1300, 29])
        );
        assert_eq!(id.home, "/home/app");
        // A numeric user the image does not know: gid 0, HOME /, as docker.
        let id = identity_in("4321", &passwd, &groups).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (4321, 0, "/"));
        let id = identity_in("", &passwd, &groups).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/"));
        let id = identity_in("4321:77", &passwd, &groups).unwrap();
        assert_eq!((id.uid, id.gid), (4321, 77));
    }

    #[test]
    fn users_resolve_like_docker() {
        let passwd: Vec<Vec<String>> = [
            "root:x:0:0::/root:/bin/sh",
            "app:x:1234:1300::/home/app:/bin/sh",
        ]
        .iter()
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect();
        let groups: Vec<Vec<String>> = ["root:x:0:", "staff:x:50:", "apps:x:1300:"]
            .iter()
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect();
        let r = |s: &str| resolve_user_in(s, &passwd, &groups);
        assert_eq!(
            r("").unwrap(),
            RunAs {
                name: Some("root".into()),
                uid: 0,
                group: None,
                gid: 0
            }
        );
        assert_eq!(
            r("app").unwrap(),
            RunAs {
                name: Some("app".into()),
                uid: 1234,
                group: None,
                gid: 1300
            }
        );
        assert_eq!(r("1234").unwrap().name.as_deref(), Some("app"));
        assert_eq!(
            r("app:staff").unwrap(),
            RunAs {
                name: Some("app".into()),
                uid: 1234,
                group: Some("staff".into()),
                gid: 50
            }
        );
        assert_eq!(
            r("4000").unwrap(),
            RunAs {
                name: None,
                uid: 4000,
                group: None,
                gid: 0
            }
        );
        assert_eq!(
            r("4000:4001").unwrap(),
            RunAs {
                name: None,
                uid: 4000,
                group: None,
                gid: 4001
            }
        );
        assert_eq!(
            r("app:4001").unwrap(),
            RunAs {
                name: None,
                uid: 1234,
                group: None,
                gid: 4001
            }
        );
        assert!(r("nobody-here")
            .unwrap_err()
            .to_string()
            .contains("not in its /etc/passwd"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("not in its /etc/group"));
    }

    #[test]
    fn malformed_primary_gid_is_an_error_not_root() {
        let passwd: Vec<Vec<String>> = ["app:x:1234:12a4::/home/app:/bin/sh"]
            .iter()
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect();
        let err = resolve_user_in("app", &passwd, &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("bad primary gid \"12a4\" for app in the image's /etc/passwd"),
            "{msg}"
        );
        assert!(identity_in("1234", &passwd, &[]).is_err());
    }
}
