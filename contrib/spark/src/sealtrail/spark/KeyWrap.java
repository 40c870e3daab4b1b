package sealtrail.spark;

import java.util.Arrays;
import java.util.Base64;

import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.bouncycastle.crypto.InvalidCipherTextException;
import org.bouncycastle.crypto.engines.AESEngine;
import org.bouncycastle.crypto.modes.GCMSIVBlockCipher;
import org.bouncycastle.crypto.params.AEADParameters;
import org.bouncycastle.crypto.params.KeyParameter;

/**
 * The unwrap half of sealtrail's envelope encryption: wrappedDEK = base64(12-byte nonce ‖
 * AES-256-GCM-SIV(KEK, nonce, DEK, AAD = masterKeyID as UTF-8)), 60 bytes before base64.
 *
 * <p>The JDK has no GCM-SIV, so Bouncy Castle's {@link GCMSIVBlockCipher} does it. The
 * masterKeyID is the associated data, so key material copied into another file's footer under
 * another key id fails authentication instead of decrypting.
 */
final class KeyWrap {
  static final int NONCE_BYTES = 12;
  static final int KEY_BYTES = 32;
  static final int TAG_BYTES = 16;

  private KeyWrap() {}

  static byte[] unwrap(byte[] kek, String wrappedKey, String masterKeyID) {
    KeyAccessDeniedException fail =
        new KeyAccessDeniedException(
            "sealtrail: the data key wrapped under `"
                + masterKeyID
                + "` cannot be unwrapped: wrong key material or tampered key metadata");
    byte[] raw;
    try {
      raw = Base64.getDecoder().decode(wrappedKey == null ? "" : wrappedKey.trim());
    } catch (IllegalArgumentException e) {
      throw fail;
    }
    if (raw.length != NONCE_BYTES + KEY_BYTES + TAG_BYTES) {
      throw fail;
    }
    byte[] nonce = Arrays.copyOfRange(raw, 0, NONCE_BYTES);
    byte[] aad = masterKeyID.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    GCMSIVBlockCipher cipher = new GCMSIVBlockCipher(new AESEngine());
    cipher.init(false, new AEADParameters(new KeyParameter(kek), TAG_BYTES * 8, nonce, aad));
    byte[] out = new byte[cipher.getOutputSize(raw.length - NONCE_BYTES)];
    try {
      int n = cipher.processBytes(raw, NONCE_BYTES, raw.length - NONCE_BYTES, out, 0);
      n += cipher.doFinal(out, n);
      if (n != KEY_BYTES) {
        Arrays.fill(out, (byte) 0);
        throw fail;
      }
      if (n == out.length) {
        return out;
      }
      byte[] dek = Arrays.copyOf(out, n);
      Arrays.fill(out, (byte) 0);
      return dek;
    } catch (InvalidCipherTextException | IllegalStateException e) {
      Arrays.fill(out, (byte) 0);
      throw fail;
    }
  }
}
