use std::path::Path;

use super::*;

fn mounts(dir: &Path) -> Mounts {
    Mounts {
        tls_dir: dir.join("tls"),
        sasl_dir: dir.join("sasl"),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_connection_without_tls_or_sasl_is_plaintext() {
    let connection = KafkaConnection {
        bootstrap_servers: "k1:9092,k2:9092".into(),
        ..Default::default()
    };
    let settings = KafkaSettings::from_connection(&connection, None).unwrap();
    assert_eq!(settings.get("bootstrap.servers"), Some("k1:9092,k2:9092"));
    assert_eq!(settings.get("security.protocol"), Some("PLAINTEXT"));
    assert_eq!(settings.get("sasl.mechanism"), None);
}

#[test]
fn the_command_line_bootstrap_servers_replace_the_manifests() {
    let connection = KafkaConnection {
        bootstrap_servers: "kafka:9092".into(),
        ..Default::default()
    };
    let settings = KafkaSettings::from_connection(&connection, Some("127.0.0.1:4242")).unwrap();
    assert_eq!(settings.get("bootstrap.servers"), Some("127.0.0.1:4242"));
    assert!(matches!(
        KafkaSettings::from_connection(&connection, Some(" ")),
        Err(ConfigError::NoBootstrapServers)
    ));
}

#[test]
fn a_tls_secret_maps_to_the_mounted_files_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("tls/ca.crt"), "ca");
    let connection = KafkaConnection {
        bootstrap_servers: "kafka:9093".into(),
        tls: Some(KafkaTls {
            secret_name: Some("kafka-tls".into()),
            ..Default::default()
        }),
        sasl: None,
    };
    let settings =
        KafkaSettings::from_connection_with(&connection, None, &mounts(dir.path())).unwrap();
    assert_eq!(settings.get("security.protocol"), Some("SSL"));
    let ca = dir.path().join("tls/ca.crt").display().to_string();
    assert_eq!(settings.get("ssl.ca.location"), Some(ca.as_str()));
    assert_eq!(settings.get("ssl.certificate.location"), None);

    write(&dir.path().join("tls/tls.crt"), "cert");
    write(&dir.path().join("tls/tls.key"), "key");
    let settings =
        KafkaSettings::from_connection_with(&connection, None, &mounts(dir.path())).unwrap();
    let cert = dir.path().join("tls/tls.crt").display().to_string();
    let key = dir.path().join("tls/tls.key").display().to_string();
    assert_eq!(
        settings.get("ssl.certificate.location"),
        Some(cert.as_str())
    );
    assert_eq!(settings.get("ssl.key.location"), Some(key.as_str()));
}

#[test]
fn explicit_tls_files_win_over_the_secret_mount() {
    let connection = KafkaConnection {
        bootstrap_servers: "kafka:9093".into(),
        tls: Some(KafkaTls {
            secret_name: Some("kafka-tls".into()),
            ca_file: Some("/local/ca.pem".into()),
            cert_file: Some("/local/cert.pem".into()),
            key_file: Some("/local/key.pem".into()),
        }),
        sasl: None,
    };
    let settings = KafkaSettings::from_connection(&connection, None).unwrap();
    assert_eq!(settings.get("ssl.ca.location"), Some("/local/ca.pem"));
    assert_eq!(
        settings.get("ssl.certificate.location"),
        Some("/local/cert.pem")
    );
    assert_eq!(settings.get("ssl.key.location"), Some("/local/key.pem"));
}

#[test]
fn sasl_scram_over_tls_reads_user_and_password_from_the_secret_mount() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("sasl/username"), "tidemark\n");
    write(&dir.path().join("sasl/password"), "s3cret\n");
    let connection = KafkaConnection {
        bootstrap_servers: "kafka:9094".into(),
        tls: Some(KafkaTls::default()),
        sasl: Some(KafkaSasl {
            mechanism: SaslMechanism::ScramSha512,
            secret_name: Some("kafka-user".into()),
            ..Default::default()
        }),
    };
    let settings =
        KafkaSettings::from_connection_with(&connection, None, &mounts(dir.path())).unwrap();
    assert_eq!(settings.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(settings.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(settings.get("sasl.username"), Some("tidemark"));
    assert_eq!(settings.get("sasl.password"), Some("s3cret"));
    assert_eq!(settings.get("ssl.ca.location"), None);
}

#[test]
fn sasl_plain_takes_the_local_username_and_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    write(&password, "hunter2");
    let connection = KafkaConnection {
        bootstrap_servers: "localhost:9092".into(),
        tls: None,
        sasl: Some(KafkaSasl {
            mechanism: SaslMechanism::Plain,
            username: Some("alice".into()),
            password_file: Some(password.display().to_string()),
            ..Default::default()
        }),
    };
    let settings = KafkaSettings::from_connection(&connection, None).unwrap();
    assert_eq!(settings.get("security.protocol"), Some("SASL_PLAINTEXT"));
    assert_eq!(settings.get("sasl.mechanism"), Some("PLAIN"));
    assert_eq!(settings.get("sasl.username"), Some("alice"));
    assert_eq!(settings.get("sasl.password"), Some("hunter2"));
    let config = settings.client_config();
    assert_eq!(config.get("sasl.password"), Some("hunter2"));
}

#[test]
fn a_missing_password_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let connection = KafkaConnection {
        bootstrap_servers: "localhost:9092".into(),
        tls: None,
        sasl: Some(KafkaSasl {
            username: Some("alice".into()),
            ..Default::default()
        }),
    };
    let err = KafkaSettings::from_connection_with(&connection, None, &mounts(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("failed to read Kafka SASL password from "),
        "{err}"
    );
    assert!(err.ends_with("sasl/password"), "{err}");
}

#[test]
fn printing_the_settings_never_shows_the_password() {
    let mut settings = KafkaSettings::bootstrap("kafka:9092");
    settings.set("sasl.username", "alice");
    settings.set("sasl.password", "hunter2");
    settings.set("ssl.key.password", "keypass");
    for text in [
        format!("{settings:?}"),
        format!("{settings:#?}"),
        settings.to_string(),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("keypass"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
        assert!(text.contains("alice"), "{text}");
    }
    assert_eq!(
        settings.to_string(),
        "bootstrap.servers=kafka:9092 sasl.password=[redacted] sasl.username=alice \
         ssl.key.password=[redacted]"
    );
    let config = format!("{:?}", settings.client_config());
    assert!(!config.contains("hunter2"), "{config}");
}
