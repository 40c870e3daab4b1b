package sealtrail.spark;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.util.Arrays;
import java.util.Base64;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;

/**
 * Reads key material from a sealtrail keyring, with the same rules as the agent (ARCHITECTURE.md
 * "Formats"): {@code <keyring>/<name>.json} holds {@code {"name":…,"versions":[{"version":1,
 * "created":"<RFC 3339>","material":"base64:<32 bytes>"}]}}; {@code SEALTRAIL_KEY_<NAME>} in the
 * environment supplies version 1 of a key and wins over a file of the same name.
 *
 * <p>A key file is opened like ssh opens a private key, as the agent does: never through a
 * symbolic link, only a regular file owned by this user and not readable or writable by group
 * or others; the keyring directory must be owned by this user or root and not writable by group
 * or others (who could swap a key file). A file that breaks a rule is refused, not read.
 *
 * <p>Nothing is cached: a key file is a few hundred bytes read once per segment footer, so a
 * rotated or revoked key takes effect at the next file without a restart.
 */
final class Keyring {
  /** Key files are a few hundred bytes; anything larger is not a key file. */
  static final int MAX_KEY_FILE_BYTES = 64 * 1024;

  private static final ObjectMapper JSON = new ObjectMapper();

  private final Path dir;
  private final String dirOrigin;
  private final Map<String, String> env;

  /**
   * @param dir the keyring directory, or null when none is configured (environment keys only)
   * @param dirOrigin where {@code dir} came from, for messages
   * @param env the environment holding {@code SEALTRAIL_KEY_<NAME>} variables
   */
  Keyring(Path dir, String dirOrigin, Map<String, String> env) {
    this.dir = dir;
    this.dirOrigin = dirOrigin;
    this.env = env;
  }

  /** The 32 bytes of key version {@code id}; the caller wipes them after use. */
  byte[] material(KeyId id) {
    String var = "SEALTRAIL_KEY_" + id.envSuffix();
    String fromEnv = env.get(var);
    if (fromEnv != null) {
      if (id.version != 1) {
        throw new KeyAccessDeniedException(
            "sealtrail: key `" + id.name + "` comes from " + var
                + ", which supplies version 1 only; the segment needs version " + id.version);
      }
      return parseMaterial(fromEnv, var);
    }
    if (dir == null) {
      throw new KeyAccessDeniedException(
          "sealtrail: key `" + id + "` not found: no keyring configured (set the Hadoop property "
              + SealtrailKmsClient.KEYRING_DIR + ", in Spark spark.hadoop."
              + SealtrailKmsClient.KEYRING_DIR + ", or SEALTRAIL_KEYS) and no " + var
              + " in the environment");
    }
    Path path = dir.resolve(id.name + ".json");
    JsonNode file = readKeyFile(id, path, var);
    checkDir();
    return versionMaterial(id, path, file);
  }

  private JsonNode readKeyFile(KeyId id, Path path, String var) {
    PosixFileAttributes before;
    try {
      before = Files.readAttributes(path, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
    } catch (NoSuchFileException e) {
      throw new KeyAccessDeniedException(
          "sealtrail: key `" + id.name + "` not found in " + dir + " (from " + dirOrigin
              + "); copy " + id.name + ".json from the agent's keyring or set " + var);
    } catch (IOException | UnsupportedOperationException e) {
      throw new ParquetCryptoRuntimeException("sealtrail: key file " + path + ": " + e, e);
    }
    checkPrivate(path, before);
    byte[] text = new byte[0];
    // NOFOLLOW_LINKS on open: a symbolic link put in place after the check above fails here.
    try (InputStream in =
        Files.newInputStream(path, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
      text = in.readNBytes(MAX_KEY_FILE_BYTES + 1);
      if (text.length > MAX_KEY_FILE_BYTES) {
        throw new ParquetCryptoRuntimeException(
            "sealtrail: key file " + path + ": larger than " + MAX_KEY_FILE_BYTES
                + " bytes, not a key file");
      }
      PosixFileAttributes after =
          Files.readAttributes(path, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
      if (!java.util.Objects.equals(before.fileKey(), after.fileKey())) {
        throw new ParquetCryptoRuntimeException(
            "sealtrail: key file " + path + " was replaced while it was read; try again");
      }
      checkPrivate(path, after);
      return JSON.readTree(text);
    } catch (IOException e) {
      // A parse error message quotes the text: never show it, it holds key material.
      String reason =
          e instanceof com.fasterxml.jackson.core.JsonProcessingException
              ? "not valid JSON"
              : e.toString();
      throw new ParquetCryptoRuntimeException("sealtrail: key file " + path + ": " + reason);
    } finally {
      Arrays.fill(text, (byte) 0);
    }
  }

  private static int currentUid() {
    return (int) new com.sun.security.auth.module.UnixSystem().getUid();
  }

  private static int uidOf(Path path) {
    try {
      return (Integer) Files.getAttribute(path, "unix:uid", LinkOption.NOFOLLOW_LINKS);
    } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
      throw new ParquetCryptoRuntimeException("sealtrail: " + path + ": cannot read its owner: " + e, e);
    }
  }

  private static int mode(Set<PosixFilePermission> perms) {
    int m = 0;
    for (PosixFilePermission p : perms) {
      m |= 1 << (8 - p.ordinal());
    }
    return m;
  }

  private static void checkPrivate(Path path, PosixFileAttributes a) {
    if (a.isSymbolicLink()) {
      throw new KeyAccessDeniedException(
          "sealtrail: " + path + " is a symbolic link; key files must be regular files");
    }
    if (!a.isRegularFile()) {
      throw new KeyAccessDeniedException("sealtrail: " + path + " is not a regular file");
    }
    int uid = uidOf(path);
    int me = currentUid();
    if (uid != me) {
      throw new KeyAccessDeniedException(
          "sealtrail: " + path + " is owned by uid " + uid + ", not by this user (uid " + me + ")");
    }
    int mode = mode(a.permissions());
    if ((mode & 0077) != 0) {
      throw new KeyAccessDeniedException(
          "sealtrail: key file " + path + " is readable by group or others (mode "
              + Integer.toOctalString(mode) + "); run `chmod 600 " + path + "`");
    }
  }

  private void checkDir() {
    PosixFileAttributes a;
    try {
      a = Files.readAttributes(dir, PosixFileAttributes.class);
    } catch (IOException | UnsupportedOperationException e) {
      throw new ParquetCryptoRuntimeException("sealtrail: keyring " + dir + ": " + e, e);
    }
    int uid;
    try {
      uid = (Integer) Files.getAttribute(dir, "unix:uid");
    } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
      throw new ParquetCryptoRuntimeException("sealtrail: keyring " + dir + ": " + e, e);
    }
    int me = currentUid();
    if (uid != me && uid != 0) {
      throw new KeyAccessDeniedException(
          "sealtrail: keyring directory " + dir + " is owned by uid " + uid
              + ", not by this user (uid " + me + ") or root");
    }
    int mode = mode(a.permissions());
    if ((mode & 0022) != 0) {
      throw new KeyAccessDeniedException(
          "sealtrail: keyring directory " + dir + " is writable by group or others (mode "
              + Integer.toOctalString(mode) + "); run `chmod 700 " + dir + "`");
    }
  }

  private static byte[] versionMaterial(KeyId id, Path path, JsonNode file) {
    String where = "sealtrail: key file " + path + ": ";
    if (file == null || !file.isObject()) {
      throw new ParquetCryptoRuntimeException(where + "not a JSON object");
    }
    onlyFields(file, where, "name", "versions");
    JsonNode name = file.get("name");
    if (name == null || !name.isTextual()) {
      throw new ParquetCryptoRuntimeException(where + "missing string field `name`");
    }
    if (!name.asText().equals(id.name)) {
      throw new ParquetCryptoRuntimeException(
          where + "it names key `" + printable(name.asText()) + "`, expected `" + id.name + "`");
    }
    JsonNode versions = file.get("versions");
    if (versions == null || !versions.isArray() || versions.isEmpty()) {
      throw new ParquetCryptoRuntimeException(where + "it has no versions");
    }
    StringBuilder have = new StringBuilder();
    JsonNode found = null;
    for (JsonNode v : versions) {
      if (!v.isObject()) {
        throw new ParquetCryptoRuntimeException(where + "a version is not a JSON object");
      }
      onlyFields(v, where, "version", "created", "material");
      JsonNode n = v.get("version");
      if (n == null || !n.canConvertToInt() || !n.isIntegralNumber() || n.asInt() < 0) {
        throw new ParquetCryptoRuntimeException(where + "a version has no valid `version` number");
      }
      if (have.length() > 0) {
        have.append(", ");
      }
      have.append(n.asInt());
      if (n.asInt() == id.version) {
        if (found != null) {
          throw new ParquetCryptoRuntimeException(where + "version " + id.version + " appears twice");
        }
        found = v;
      }
    }
    if (found == null) {
      throw new KeyAccessDeniedException(
          "sealtrail: key `" + id.name + "` has no version " + id.version + " (it has versions "
              + have + " in " + path + ")");
    }
    JsonNode material = found.get("material");
    if (material == null || !material.isTextual()) {
      throw new ParquetCryptoRuntimeException(
          where + "version " + id.version + " has no string field `material`");
    }
    return parseMaterial(material.asText(), path + " version " + id.version);
  }

  private static void onlyFields(JsonNode obj, String where, String... allowed) {
    for (Iterator<String> it = obj.fieldNames(); it.hasNext(); ) {
      String f = it.next();
      if (!Arrays.asList(allowed).contains(f)) {
        throw new ParquetCryptoRuntimeException(
            where + "unknown field `" + printable(f) + "` (expected " + String.join(", ", allowed) + ")");
      }
    }
  }

  /** Parses {@code base64:<32 bytes>}; the message never quotes the text. */
  static byte[] parseMaterial(String text, String origin) {
    String t = text.trim();
    if (!t.startsWith("base64:")) {
      throw new ParquetCryptoRuntimeException(
          "sealtrail: " + origin + ": key material must start with `base64:`");
    }
    byte[] raw;
    try {
      raw = Base64.getDecoder().decode(t.substring("base64:".length()));
    } catch (IllegalArgumentException e) {
      throw new ParquetCryptoRuntimeException(
          "sealtrail: " + origin + ": key material is not valid base64");
    }
    if (raw.length != KeyWrap.KEY_BYTES) {
      int n = raw.length;
      Arrays.fill(raw, (byte) 0);
      throw new ParquetCryptoRuntimeException(
          "sealtrail: " + origin + ": key material must be 32 bytes, found " + n);
    }
    return raw;
  }

  /** A name from a file, for a message: at most 80 characters, control characters escaped. */
  static String printable(String s) {
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < s.length() && i < 80; i++) {
      char c = s.charAt(i);
      if (c < 0x20 || c == 0x7f) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    if (s.length() > 80) {
      b.append('…');
    }
    return b.toString();
  }
}
