package sealtrail.spark;

import org.apache.parquet.crypto.ParquetCryptoRuntimeException;

/**
 * A sealtrail key id, {@code <name>#<version>}: the {@code masterKeyID} of a segment's key
 * material. The name is checked like the agent checks it (1 to 64 ASCII letters, digits,
 * {@code _} and {@code -}), which also keeps it from naming a path outside the keyring.
 */
final class KeyId {
  final String name;
  final int version;

  private KeyId(String name, int version) {
    this.name = name;
    this.version = version;
  }

  static KeyId parse(String masterKeyID) {
    String shown = masterKeyID == null ? "null" : masterKeyID;
    ParquetCryptoRuntimeException bad =
        new ParquetCryptoRuntimeException(
            "sealtrail: masterKeyID `"
                + Keyring.printable(shown)
                + "` is not `<name>#<version>` (a segment wrapped by a KMS needs that KMS's"
                + " client, not the sealtrail keyring client)");
    if (masterKeyID == null) {
      throw bad;
    }
    int hash = masterKeyID.lastIndexOf('#');
    if (hash < 0) {
      throw bad;
    }
    String name = masterKeyID.substring(0, hash);
    String v = masterKeyID.substring(hash + 1);
    if (!validName(name) || v.isEmpty() || v.length() > 10 || !v.chars().allMatch(c -> c >= '0' && c <= '9')) {
      throw bad;
    }
    long version = Long.parseLong(v);
    if (version > Integer.MAX_VALUE) {
      throw bad;
    }
    return new KeyId(name, (int) version);
  }

  static boolean validName(String name) {
    if (name.isEmpty() || name.length() > 64) {
      return false;
    }
    for (int i = 0; i < name.length(); i++) {
      char c = name.charAt(i);
      boolean ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
      if (!ok) {
        return false;
      }
    }
    return true;
  }

  /** {@code payments-eu} → {@code PAYMENTS_EU}, the suffix of its environment variable. */
  String envSuffix() {
    StringBuilder b = new StringBuilder(name.length());
    for (int i = 0; i < name.length(); i++) {
      char c = name.charAt(i);
      b.append(c == '-' ? '_' : Character.toUpperCase(c));
    }
    return b.toString();
  }

  @Override
  public String toString() {
    return name + "#" + version;
  }
}
