package sealtrail.spark;

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;

import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * A read-only parquet-java {@link KmsClient} that opens sealtrail's sealed segments.
 *
 * <p>A sealed segment's footer carries PKMT1 key material with single wrapping: {@code
 * masterKeyID} is {@code <key name>#<version>} and {@code wrappedDEK} is base64(12-byte nonce ‖
 * AES-256-GCM-SIV(KEK, nonce, DEK, AAD = masterKeyID)). parquet-java's {@code
 * PropertiesDrivenCryptoFactory} passes both strings to {@link #unwrapKey}, which looks the KEK
 * up in a sealtrail keyring and returns the segment's data key. Nothing is written to disk.
 *
 * <p>Where keys come from, as in the sealtrail agent: {@code SEALTRAIL_KEY_<NAME>} in the
 * environment of the JVM (version 1 only; wins over a file), else {@code <keyring>/<name>.json},
 * where the keyring is the Hadoop property {@value #KEYRING_DIR} (in Spark: {@code
 * spark.hadoop.sealtrail.keyring.dir}), else the {@code SEALTRAIL_KEYS} environment variable.
 * Key files must be private to the user running the executor (see {@link Keyring}).
 *
 * <p>{@link #wrapKey} refuses: segments are written only by the agent, which wraps with its own
 * key provider, and a Spark job writing files under sealtrail's keys would create data that no
 * sealtrail audit trail covers.
 */
public final class SealtrailKmsClient implements KmsClient {
  /** The Hadoop property naming the keyring directory. */
  public static final String KEYRING_DIR = "sealtrail.keyring.dir";

  private Keyring keyring;

  @Override
  public void initialize(
      Configuration conf, String kmsInstanceID, String kmsInstanceURL, String accessToken) {
    String dir = conf.getTrimmed(KEYRING_DIR, "");
    String origin = KEYRING_DIR;
    if (dir.isEmpty()) {
      dir = System.getenv().getOrDefault("SEALTRAIL_KEYS", "").trim();
      origin = "SEALTRAIL_KEYS";
    }
    Path path = dir.isEmpty() ? null : Paths.get(dir);
    keyring = new Keyring(path, origin, System.getenv());
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) {
    throw new KeyAccessDeniedException(
        "sealtrail KMS client is read-only: it cannot wrap a data key under `"
            + masterKeyIdentifier
            + "` (sealed segments are written by the sealtrail agent; do not set"
            + " parquet.encryption.footer.key, uniform.key or column.keys with this client)");
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) {
    if (keyring == null) {
      throw new ParquetCryptoRuntimeException(
          "sealtrail KMS client used before initialize()");
    }
    KeyId id = KeyId.parse(masterKeyIdentifier);
    byte[] kek = keyring.material(id);
    try {
      return KeyWrap.unwrap(kek, wrappedKey, masterKeyIdentifier);
    } finally {
      Arrays.fill(kek, (byte) 0);
    }
  }
}
